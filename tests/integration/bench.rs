//! The test bench itself: the PostgreSQL and moto servers that scripts/testbench.sh starts
//! answer on loopback, through the same drivers the product uses.

use aws_sdk_s3::primitives::ByteStream;

use crate::common::bench_server;

#[tokio::test]
async fn postgres_answers_with_password_auth() {
    let Some(url) = bench_server("MWAA_DR_TEST_PG_URL") else {
        return;
    };
    assert!(
        url.contains("127.0.0.1"),
        "bench PostgreSQL must be on loopback: {url}"
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect to the bench PostgreSQL");
    let version: String = sqlx::query_scalar("select current_setting('server_version')")
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert!(
        version.starts_with("15"),
        "PostgreSQL 15 expected, got {version}"
    );
}

#[tokio::test]
async fn moto_serves_s3_to_the_real_sdk() {
    let Some(endpoint) = bench_server("MWAA_DR_TEST_MOTO_URL") else {
        return;
    };
    assert!(
        endpoint.contains("127.0.0.1"),
        "moto must be on loopback: {endpoint}"
    );
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(conf);
    let bucket = format!("bench-smoke-{}", std::process::id());
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    s3.put_object()
        .bucket(&bucket)
        .key("hello.txt")
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .expect("put");
    let body = s3
        .get_object()
        .bucket(&bucket)
        .key("hello.txt")
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("read body")
        .into_bytes();
    assert_eq!(&body[..], b"hello");
}

/// scripts/testbench.sh brings up both servers in a private directory and takes them down
/// again: after `run`, nothing listens on their ports and their files are gone.
#[test]
fn testbench_starts_and_stops_both_servers_cleanly() {
    if bench_server("MWAA_DR_TEST_PG_URL").is_none() {
        return; // the bench's own prerequisites are the same as the suite's
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbench.sh");
    let out = std::process::Command::new(script)
        .args(["run", "pg", "moto", "--", "env"])
        .env("MWAA_DR_BENCH_DIR", dir.path())
        .env_remove("MWAA_DR_TEST_PG_URL")
        .env_remove("MWAA_DR_TEST_MOTO_URL")
        .output()
        .expect("run testbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "testbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} not exported:\n{stdout}"))
            .to_string()
    };
    let pg = url::Url::parse(&value("MWAA_DR_TEST_PG_URL")).expect("pg url");
    let moto = url::Url::parse(&value("MWAA_DR_TEST_MOTO_URL")).expect("moto url");
    for (name, url) in [("PostgreSQL", pg), ("moto", moto)] {
        assert_eq!(url.host_str(), Some("127.0.0.1"), "{name} on loopback");
        let port = url.port().expect("port");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{name} still listens on {port} after the bench stopped"
        );
    }
    let leftovers = find_files(dir.path(), "PG_VERSION");
    assert!(
        leftovers.is_empty(),
        "database files left behind: {leftovers:?}"
    );
}

fn find_files(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(find_files(&path, name));
        } else if entry.file_name() == name {
            found.push(path);
        }
    }
    found
}
