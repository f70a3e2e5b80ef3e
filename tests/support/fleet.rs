//! A generated fleet map for the benchmarks and the tests that need a large one (shared by
//! `benches/publish.rs` through `#[path]`).

/// A map with `products` products, each with a master, two chained replicas and a backup,
/// and web hosts filling up to `hosts`, each serving three products, over three zones.
pub fn fleet(hosts: usize, products: usize) -> String {
    let mut text = String::from("# benchmark fleet\nschema = 1\ngeneration = 1\n\n");
    for p in 0..products {
        text.push_str(&format!(
            "[products.p{p}]\ndomain = \"p{p}.example.com\"\naliases = [\"www.p{p}.example.com\"]\n\
             docroot = \"/srv/p{p}/current/public\"\n\n[products.p{p}.database]\nname = \"p{p}\"\n\
             master = \"db-{p}-0\"\nreplicas = [\"db-{p}-1\", \"db-{p}-2\"]\nbackup = \"db-{p}-3\"\n\
             backup_url = \"s3://backups/p{p}/\"\n\n"
        ));
    }
    let mut n = 0usize;
    let mut host = |text: &mut String, id: String, roles: &str, products: &str| {
        let address = format!("10.{}.{}.{}", n / 65_536, (n / 256) % 256, n % 256);
        let az = ["a", "b", "c"][n % 3];
        text.push_str(&format!(
            "[hosts.{id}]\naddress = \"{address}\"\naz = \"us-east-1{az}\"\nroles = [{roles}]\nproducts = [{products}]\n\n"
        ));
        n += 1;
    };
    for p in 0..products {
        for i in 0..4 {
            let roles = if i == 3 {
                "\"db\", \"db-backup\""
            } else {
                "\"db\""
            };
            host(&mut text, format!("db-{p}-{i}"), roles, "");
        }
    }
    for w in 0..hosts.saturating_sub(products * 4) {
        let served: Vec<String> = (0..3)
            .map(|k| format!("\"p{}\"", (w + k) % products))
            .collect();
        host(
            &mut text,
            format!("web-{w}"),
            "\"web\", \"memcached\"",
            &served.join(", "),
        );
    }
    text
}
