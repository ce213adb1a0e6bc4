// A gRPC client no one at kcache wrote: grpc-go with the README's settings (the dns
// resolver and the round_robin policy), pointed at a CacheCluster's headless Service
// through a given DNS server. It sends Topology calls (each answered by the node that
// receives it), then one Get, with a pass-through codec (message bytes built by hand,
// so no generated code is needed), and prints how many calls each pod answered and
// what the key held.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
)

// rawCodec passes message bytes through untouched.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// getRequest encodes kcache.v1.GetRequest{key}: field 1, length-delimited.
func getRequest(key string) []byte {
	return append([]byte{0x0a, byte(len(key))}, key...)
}

// getValue decodes kcache.v1.GetResponse's found (1) and value (2) fields.
func getValue(msg []byte) (bool, string) {
	found, value := false, ""
	for i := 0; i < len(msg); {
		tag := msg[i]
		i++
		switch tag {
		case 0x08:
			found = msg[i] == 1
			i++
		case 0x12:
			n := int(msg[i])
			i++
			value = string(msg[i : i+n])
			i += n
		default:
			return found, value // later fields (version, ttl) are not needed
		}
	}
	return found, value
}

func main() {
	target := flag.String("target", "", "dns://<server>/<name>:<port>")
	key := flag.String("key", "hello", "key to read")
	calls := flag.Int("calls", 300, "Topology calls to send")
	flag.Parse()
	conn, err := grpc.NewClient(*target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin":{}}]}`),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		os.Exit(1)
	}
	defer conn.Close()
	perPeer := map[string]int{}
	invoke := func(method string, in []byte) []byte {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var out []byte
		var p peer.Peer
		err := conn.Invoke(ctx, method, &in, &out,
			grpc.ForceCodec(rawCodec{}), grpc.Peer(&p), grpc.WaitForReady(true))
		if err != nil {
			fmt.Fprintln(os.Stderr, method, err)
			os.Exit(1)
		}
		perPeer[p.Addr.String()]++
		return out
	}
	for i := 0; i < *calls; i++ {
		invoke("/kcache.v1.Cache/Topology", []byte{})
	}
	found, value := getValue(invoke("/kcache.v1.Cache/Get", getRequest(*key)))
	if !found {
		fmt.Fprintln(os.Stderr, "key not found:", *key)
		os.Exit(1)
	}
	peers := make([]string, 0, len(perPeer))
	for addr := range perPeer {
		peers = append(peers, addr)
	}
	sort.Strings(peers)
	fmt.Printf("value %s\n", value)
	for _, addr := range peers {
		fmt.Printf("peer %s %d\n", addr, perPeer[addr])
	}
}
