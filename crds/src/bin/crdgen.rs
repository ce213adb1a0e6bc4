//! Prints the CacheCluster CRD: `cargo run -p kcache-crd --bin crdgen > crds/cachecluster.yaml`.

fn main() {
    print!("{}", kcache_crd::crd_yaml());
}
