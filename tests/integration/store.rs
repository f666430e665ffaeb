//! The backup store contract, one suite run against every backend: the local directory
//! store (in a temporary directory) and the S3 store (on the bench's moto server, a fresh
//! bucket per test). S3-only facts (multipart, no lingering uploads, encryption headers, key
//! layout) are checked through a plain S3 client beside the store.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use mwaa_dr::config::S3Encryption;
use mwaa_dr::store::local::LocalStore;
use mwaa_dr::store::s3::{MIN_PART_SIZE, PARTS_IN_FLIGHT, S3Store, client_from_sdk_config};
use mwaa_dr::store::{BackupStore, ObjectInfo};
use tokio::io::AsyncReadExt;

use crate::common::bench_server;

/// Objects in the S3 tests sit under this prefix, next to a sibling that must stay invisible.
const S3_PREFIX: &str = "team/dr";
/// A small ListObjectsV2 page, so that listing a handful of objects takes several pages.
const PAGE_SIZE: i32 = 3;

/// A backend under test, with what the S3-only checks need.
struct Bench {
    store: Box<dyn BackupStore>,
    s3: Option<S3Side>,
    _dir: Option<tempfile::TempDir>,
}

struct S3Side {
    client: Client,
    bucket: String,
}

impl Bench {
    fn store(&self) -> &dyn BackupStore {
        self.store.as_ref()
    }
}

fn local_bench() -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    Bench {
        store: Box::new(LocalStore::new(dir.path().join("store"))),
        s3: None,
        _dir: Some(dir),
    }
}

fn moto_client(endpoint: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
        .build();
    Client::from_conf(conf)
}

/// A bucket name of its own for each test (nextest runs each test in its own process).
fn bucket_name(test: &str) -> String {
    let mut name = format!("store-{}-{}", std::process::id(), test.replace('_', "-"));
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// A fresh bucket on moto. Without the bench (MWAA_DR_TEST_MOTO_URL unset) the test fails:
/// run the suite through scripts/test.sh, which starts moto.
pub async fn moto_bucket(test: &str) -> Option<(Client, String)> {
    let endpoint = bench_server("MWAA_DR_TEST_MOTO_URL")?;
    let client = moto_client(&endpoint);
    let bucket = bucket_name(test);
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    Some((client, bucket))
}

async fn s3_bench(test: &str) -> Option<Bench> {
    let (client, bucket) = moto_bucket(test).await?;
    let store = S3Store::new(client.clone(), &bucket, S3_PREFIX, None, MIN_PART_SIZE)
        .with_page_size(PAGE_SIZE);
    Some(Bench {
        store: Box::new(store),
        s3: Some(S3Side { client, bucket }),
        _dir: None,
    })
}

/// Deterministic bytes that differ from part to part (so a reordered part is noticed).
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

fn keys(objects: &[ObjectInfo]) -> Vec<&str> {
    objects.iter().map(|o| o.key.as_str()).collect()
}

impl S3Side {
    async fn in_progress_uploads(&self) -> Vec<String> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .send()
            .await
            .expect("list multipart uploads");
        out.uploads()
            .iter()
            .map(|u| {
                format!(
                    "{} ({})",
                    u.key().unwrap_or("?"),
                    u.upload_id().unwrap_or("?")
                )
            })
            .collect()
    }

    async fn head(&self, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
        self.client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("head {key}: {e:?}"))
    }

    async fn put_raw(&self, key: &str, body: &'static [u8]) {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from_static(body))
            .send()
            .await
            .expect("put object");
    }
}

// ---------------------------------------------------------------------------------------
// The suite: each case runs against every backend.

async fn round_trip(b: &Bench) {
    let store = b.store();
    let body = b"table,rows\ndag_run,3\n";
    assert_eq!(
        store
            .put_bytes("backups/a/manifest.json", body)
            .await
            .expect("put"),
        body.len() as u64
    );
    assert_eq!(
        store
            .get_bytes("backups/a/manifest.json")
            .await
            .expect("get"),
        body
    );
    assert!(
        store
            .exists("backups/a/manifest.json")
            .await
            .expect("exists")
    );
    assert_eq!(
        store
            .put_bytes("backups/a/empty", b"")
            .await
            .expect("put empty"),
        0
    );
    assert_eq!(
        store.get_bytes("backups/a/empty").await.expect("get empty"),
        b""
    );

    // Streamed writes in small chunks arrive whole.
    let mut writer = store.create("backups/a/chunks").await.expect("create");
    for chunk in [&b"one "[..], b"two ", b"three"] {
        writer.write(chunk).await.expect("write");
    }
    assert_eq!(writer.finish().await.expect("finish"), 13);
    assert_eq!(
        store.get_bytes("backups/a/chunks").await.expect("get"),
        b"one two three"
    );

    let listed = store.list("backups/a/").await.expect("list");
    assert_eq!(
        listed,
        vec![
            ObjectInfo {
                key: "backups/a/chunks".into(),
                size: 13
            },
            ObjectInfo {
                key: "backups/a/empty".into(),
                size: 0
            },
            ObjectInfo {
                key: "backups/a/manifest.json".into(),
                size: body.len() as u64
            },
        ]
    );
    if let Some(s3) = &b.s3 {
        // Keys are `<prefix>/<key>` in the bucket.
        let head = s3
            .head(&format!("{S3_PREFIX}/backups/a/manifest.json"))
            .await;
        assert_eq!(head.content_length(), Some(body.len() as i64));
        assert_eq!(head.server_side_encryption(), None, "no SSE asked for");
    }
}

async fn create_on_existing_key_fails(b: &Bench) {
    let store = b.store();
    store
        .put_bytes("backups/x/manifest.json", b"original")
        .await
        .expect("put");
    let err = match store.create("backups/x/manifest.json").await {
        Ok(_) => panic!("create on an existing key must fail"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("backups/x/manifest.json"), "{err}");
    assert!(err.contains("exists"), "{err}");
    let err = store
        .put_bytes("backups/x/manifest.json", b"replacement")
        .await
        .expect_err("put on an existing key must fail")
        .to_string();
    assert!(err.contains("backups/x/manifest.json"), "{err}");
    assert_eq!(
        store
            .get_bytes("backups/x/manifest.json")
            .await
            .expect("get"),
        b"original"
    );
}

/// Two writers of one key, the second created before the first finished: the first wins,
/// the second's finish fails and leaves the first's object intact.
async fn finish_never_overwrites(b: &Bench) {
    let store = b.store();
    let mut first = store
        .create("backups/race/t.csv.zst")
        .await
        .expect("create first");
    let mut second = store
        .create("backups/race/t.csv.zst")
        .await
        .expect("create second");
    first.write(b"first").await.expect("write");
    second.write(b"second").await.expect("write");
    first.finish().await.expect("first finish");
    let err = second
        .finish()
        .await
        .expect_err("second finish must fail")
        .to_string();
    assert!(err.contains("backups/race/t.csv.zst"), "{err}");
    assert_eq!(
        store
            .get_bytes("backups/race/t.csv.zst")
            .await
            .expect("get"),
        b"first"
    );

    // The same on the multipart path.
    let big = pattern(MIN_PART_SIZE + 1024);
    let mut first = store
        .create("backups/race/big")
        .await
        .expect("create first");
    let mut second = store
        .create("backups/race/big")
        .await
        .expect("create second");
    first.write(&big).await.expect("write");
    second
        .write(&pattern(MIN_PART_SIZE * 2))
        .await
        .expect("write");
    first.finish().await.expect("first finish");
    second.finish().await.expect_err("second finish must fail");
    assert!(store.get_bytes("backups/race/big").await.expect("get") == big);
    if let Some(s3) = &b.s3 {
        assert_eq!(s3.in_progress_uploads().await, Vec::<String>::new());
    }
}

async fn abort_leaves_nothing(b: &Bench) {
    let store = b.store();
    // Small (never left the buffer) and large (a multipart upload was started).
    for (key, len) in [
        ("backups/ab/small", 100),
        ("backups/ab/large", MIN_PART_SIZE * 2 + 10),
    ] {
        let mut writer = store.create(key).await.expect("create");
        writer.write(&pattern(len)).await.expect("write");
        writer.abort().await.expect("abort");
        assert!(
            !store.exists(key).await.expect("exists"),
            "{key} visible after abort"
        );
    }
    // Nothing ever finished is visible, and an unfinished writer hides its object too.
    let mut pending = store.create("backups/ab/pending").await.expect("create");
    pending.write(b"not yet").await.expect("write");
    assert!(!store.exists("backups/ab/pending").await.expect("exists"));
    assert_eq!(store.list("").await.expect("list"), vec![]);
    pending.abort().await.expect("abort");
    assert_eq!(store.list("").await.expect("list"), vec![]);
    if let Some(s3) = &b.s3 {
        assert_eq!(s3.in_progress_uploads().await, Vec::<String>::new());
    }
}

async fn list_is_relative_sorted_and_paginated(b: &Bench) {
    let store = b.store();
    // Written out of order; more objects than one page holds.
    let names = ["g", "c", "a", "f", "b", "e", "d"];
    for name in names {
        store
            .put_bytes(
                &format!("backups/20260101T000000Z-0001/{name}.csv.zst"),
                name.as_bytes(),
            )
            .await
            .expect("put");
    }
    store
        .put_bytes("backups/20251231T000000Z-0002/manifest.json", b"{}")
        .await
        .expect("put");
    store
        .put_bytes("locks/store.lock", b"lock")
        .await
        .expect("put");
    if let Some(s3) = &b.s3 {
        // Outside the store's prefix, though it shares the prefix's first characters.
        s3.put_raw(
            &format!("{S3_PREFIX}-sibling/backups/x/manifest.json"),
            b"{}",
        )
        .await;
        s3.put_raw("backups/y/manifest.json", b"{}").await;
    }

    let listed = store
        .list("backups/20260101T000000Z-0001/")
        .await
        .expect("list");
    let expected: Vec<String> = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .map(|n| format!("backups/20260101T000000Z-0001/{n}.csv.zst"))
        .collect();
    assert_eq!(keys(&listed), expected);
    assert!(listed.iter().all(|o| o.size == 1));

    let all = store.list("").await.expect("list all");
    assert_eq!(all.len(), 9, "{:?}", keys(&all));
    assert_eq!(all[0].key, "backups/20251231T000000Z-0002/manifest.json");
    assert_eq!(all[8].key, "locks/store.lock");
    assert!(
        keys(&all).windows(2).all(|w| w[0] < w[1]),
        "sorted: {:?}",
        keys(&all)
    );
    assert_eq!(keys(&store.list("backups/").await.expect("list")).len(), 8);
    assert_eq!(store.list("nothing/").await.expect("list"), vec![]);

    if let Some(s3) = &b.s3 {
        // The server honours the page size, so the store's listing above took several pages.
        let page = s3
            .client
            .list_objects_v2()
            .bucket(&s3.bucket)
            .prefix(format!("{S3_PREFIX}/"))
            .max_keys(PAGE_SIZE)
            .send()
            .await
            .expect("list page");
        assert_eq!(page.contents().len(), PAGE_SIZE as usize);
        assert_eq!(page.is_truncated(), Some(true));
    }
}

async fn delete_is_idempotent(b: &Bench) {
    let store = b.store();
    store
        .delete("backups/none/manifest.json")
        .await
        .expect("delete missing");
    store
        .put_bytes("backups/d/manifest.json", b"{}")
        .await
        .expect("put");
    store
        .put_bytes("backups/d/t.csv.zst", b"t")
        .await
        .expect("put");
    store
        .delete("backups/d/manifest.json")
        .await
        .expect("delete");
    assert!(
        !store
            .exists("backups/d/manifest.json")
            .await
            .expect("exists")
    );
    assert_eq!(
        keys(&store.list("backups/").await.expect("list")),
        vec!["backups/d/t.csv.zst"]
    );
    store
        .delete("backups/d/manifest.json")
        .await
        .expect("delete again");
    // A deleted key can be written again.
    store
        .put_bytes("backups/d/manifest.json", b"new")
        .await
        .expect("put again");
    assert_eq!(
        store
            .get_bytes("backups/d/manifest.json")
            .await
            .expect("get"),
        b"new"
    );
}

async fn large_object_round_trips(b: &Bench) {
    let store = b.store();
    // Two full parts and a short last one, written in chunks that straddle part boundaries.
    let body = pattern(MIN_PART_SIZE * 2 + 777_777);
    let mut writer = store
        .create("backups/big/task_instance.csv.zst")
        .await
        .expect("create");
    for chunk in body.chunks(1_000_003) {
        writer.write(chunk).await.expect("write");
    }
    assert_eq!(writer.finish().await.expect("finish"), body.len() as u64);

    let mut reader = store
        .open("backups/big/task_instance.csv.zst")
        .await
        .expect("open");
    let mut read = Vec::new();
    reader.read_to_end(&mut read).await.expect("read");
    assert_eq!(read.len(), body.len());
    assert!(read == body, "content differs");
    let listed = store.list("backups/big/").await.expect("list");
    assert_eq!(listed[0].size, body.len() as u64);

    if let Some(s3) = &b.s3 {
        let head = s3
            .head(&format!("{S3_PREFIX}/backups/big/task_instance.csv.zst"))
            .await;
        let etag = head
            .e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        assert!(
            etag.ends_with("-3"),
            "a 3-part multipart upload's ETag, got {etag}"
        );
        assert_eq!(s3.in_progress_uploads().await, Vec::<String>::new());
    }
}

async fn missing_key_fails_naming_it(b: &Bench) {
    let store = b.store();
    let err = match store.open("backups/gone/manifest.json").await {
        Ok(_) => panic!("opening a missing key must fail"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("backups/gone/manifest.json"), "{err}");
    assert!(store.get_bytes("backups/gone/manifest.json").await.is_err());
    assert!(
        !store
            .exists("backups/gone/manifest.json")
            .await
            .expect("exists")
    );
    if b.s3.is_some() {
        assert!(
            err.contains(&format!(
                "s3://{}/{S3_PREFIX}/backups/gone/manifest.json",
                bucket_of(b)
            )),
            "{err}"
        );
        assert!(err.contains("not found"), "{err}");
    }
}

fn bucket_of(b: &Bench) -> &str {
    b.s3.as_ref().map(|s| s.bucket.as_str()).unwrap_or_default()
}

async fn invalid_keys_are_refused(b: &Bench) {
    let store = b.store();
    for key in ["", "/abs", "a//b", "a/../b", "./a", "a/"] {
        assert!(store.create(key).await.is_err(), "create {key:?} accepted");
        assert!(store.exists(key).await.is_err(), "exists {key:?} accepted");
    }
}

/// Each case as two tests: `store::local::CASE` and `store::s3::CASE`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::local_bench()).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(bench) = super::s3_bench(stringify!($case)).await else {
                        return;
                    };
                    super::$case(&bench).await;
                }
            )*
        }
    };
}

conformance!(
    round_trip,
    create_on_existing_key_fails,
    finish_never_overwrites,
    abort_leaves_nothing,
    list_is_relative_sorted_and_paginated,
    delete_is_idempotent,
    large_object_round_trips,
    missing_key_fails_naming_it,
    invalid_keys_are_refused,
);

// ---------------------------------------------------------------------------------------
// S3 only

#[tokio::test]
async fn s3_dropped_writer_aborts_its_upload() {
    let Some((client, bucket)) = moto_bucket("dropped-writer").await else {
        return;
    };
    let side = S3Side {
        client: client.clone(),
        bucket: bucket.clone(),
    };
    let store = S3Store::new(client, &bucket, "", None, MIN_PART_SIZE);
    let mut writer = store
        .create("backups/dropped/t.csv.zst")
        .await
        .expect("create");
    writer
        .write(&pattern(MIN_PART_SIZE + 1))
        .await
        .expect("write");
    assert_eq!(
        side.in_progress_uploads().await.len(),
        1,
        "one part went up"
    );
    drop(writer);
    let mut left = side.in_progress_uploads().await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = side.in_progress_uploads().await;
    }
    assert_eq!(
        left,
        Vec::<String>::new(),
        "the dropped writer's upload was not aborted"
    );
    assert!(
        !store
            .exists("backups/dropped/t.csv.zst")
            .await
            .expect("exists")
    );
}

#[tokio::test]
async fn s3_empty_prefix_keys_have_no_leading_slash() {
    let Some((client, bucket)) = moto_bucket("empty-prefix").await else {
        return;
    };
    let side = S3Side {
        client: client.clone(),
        bucket: bucket.clone(),
    };
    let store = S3Store::new(client.clone(), &bucket, "", None, MIN_PART_SIZE);
    assert_eq!(store.describe(), format!("s3://{bucket}"));
    store
        .put_bytes("backups/a/manifest.json", b"{}")
        .await
        .expect("put");
    side.head("backups/a/manifest.json").await;
    assert_eq!(
        keys(&store.list("").await.expect("list")),
        vec!["backups/a/manifest.json"]
    );

    // A prefix given with slashes is the same prefix.
    let nested = S3Store::new(client, &bucket, "/a/b/", None, MIN_PART_SIZE);
    assert_eq!(nested.describe(), format!("s3://{bucket}/a/b"));
    nested.put_bytes("k", b"v").await.expect("put");
    side.head("a/b/k").await;
}

async fn encrypted_store(test: &str, encryption: S3Encryption) -> Option<(S3Store, S3Side)> {
    let (client, bucket) = moto_bucket(test).await?;
    let store = S3Store::new(
        client.clone(),
        &bucket,
        S3_PREFIX,
        Some(encryption),
        MIN_PART_SIZE,
    );
    Some((store, S3Side { client, bucket }))
}

/// Writes a one-request object and a multipart one; returns their object keys.
async fn write_both_paths(store: &S3Store) -> [String; 2] {
    store
        .put_bytes("small", b"secret")
        .await
        .expect("put small");
    let mut writer = store.create("large").await.expect("create large");
    writer
        .write(&pattern(MIN_PART_SIZE + 5))
        .await
        .expect("write");
    writer.finish().await.expect("finish large");
    [format!("{S3_PREFIX}/small"), format!("{S3_PREFIX}/large")]
}

#[tokio::test]
async fn s3_sse_kms_headers_reach_every_object() {
    let key_id = "arn:aws:kms:us-east-1:123456789012:key/0b7e5d6c-dr-backups";
    let Some((store, side)) = encrypted_store(
        "sse-kms",
        S3Encryption::SseKms {
            key_id: Some(key_id.into()),
        },
    )
    .await
    else {
        return;
    };
    for key in write_both_paths(&store).await {
        let head = side.head(&key).await;
        assert_eq!(
            head.server_side_encryption(),
            Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms),
            "{key}"
        );
        assert_eq!(head.ssekms_key_id(), Some(key_id), "{key}");
    }
    assert_eq!(store.get_bytes("small").await.expect("get"), b"secret");
}

#[tokio::test]
async fn s3_sse_kms_without_key_uses_the_default_key() {
    let Some((store, side)) =
        encrypted_store("sse-kms-default", S3Encryption::SseKms { key_id: None }).await
    else {
        return;
    };
    for key in write_both_paths(&store).await {
        let head = side.head(&key).await;
        assert_eq!(
            head.server_side_encryption(),
            Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms),
            "{key}"
        );
    }
}

#[tokio::test]
async fn s3_sse_s3_headers_reach_every_object() {
    let Some((store, side)) = encrypted_store("sse-s3", S3Encryption::SseS3).await else {
        return;
    };
    for key in write_both_paths(&store).await {
        let head = side.head(&key).await;
        assert_eq!(
            head.server_side_encryption(),
            Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256),
            "{key}"
        );
        assert_eq!(head.ssekms_key_id(), None, "{key}");
    }
}

/// A client built from the shared AWS configuration with an endpoint override talks
/// path-style. The endpoint is named `localhost`: for an IP address the SDK picks path-style
/// by itself, but with a host name a virtual-host style request would go to
/// `BUCKET.localhost`, which does not resolve.
#[tokio::test]
async fn s3_client_from_shared_config_uses_path_style_with_an_endpoint() {
    let Some((_, bucket)) = moto_bucket("shared-config").await else {
        return;
    };
    let endpoint = bench_server("MWAA_DR_TEST_MOTO_URL")
        .expect("moto")
        .replace("127.0.0.1", "localhost");
    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
        .load()
        .await;
    let store = S3Store::new(client_from_sdk_config(&sdk_config), &bucket, "p", None, 0);
    assert_eq!(
        store.part_size(),
        MIN_PART_SIZE,
        "part size clamped to S3's minimum"
    );
    store
        .put_bytes("k", b"v")
        .await
        .expect("put through the shared configuration");
    assert_eq!(store.get_bytes("k").await.expect("get"), b"v");
}

/// Writes a killed backup leaves behind: an incomplete multipart upload on S3 and a
/// temporary file in a directory store. Neither is an object; both are collected once older
/// than the given age, and a younger one is kept (a backup may still be writing it).
#[tokio::test]
async fn abandoned_writes_are_collected_once_old() {
    let Some((client, bucket)) = moto_bucket("abandoned").await else {
        return;
    };
    let store = S3Store::new(client.clone(), &bucket, "dr", None, 0);
    let upload = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("dr/backups/20260101T000000.000Z-0001/log.csv.zst")
        .send()
        .await
        .expect("create multipart upload");
    let id = upload.upload_id().expect("upload id").to_string();
    client
        .upload_part()
        .bucket(&bucket)
        .key("dr/backups/20260101T000000.000Z-0001/log.csv.zst")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(vec![7u8; 1024]))
        .send()
        .await
        .expect("upload part");
    let pending = || async {
        client
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .expect("list uploads")
            .uploads()
            .len()
    };
    // moto answers every ListMultipartUploads with Initiated 2010-11-10T20:48:33Z (it does
    // not keep the time), so the ages are chosen around that date.
    let year = std::time::Duration::from_secs(365 * 86400);
    let young = store
        .collect_abandoned_writes("backups/", 30 * year)
        .await
        .expect("collect");
    assert!(young.is_empty(), "{young:?}");
    assert_eq!(pending().await, 1, "an upload younger than the age is kept");
    let old = store
        .collect_abandoned_writes("backups/", year)
        .await
        .expect("collect");
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(pending().await, 0, "the old upload is aborted");

    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalStore::new(dir.path());
    local
        .put_bytes("backups/b/kept.csv.zst", b"x")
        .await
        .expect("put");
    let mut writer = local
        .create("backups/b/killed.csv.zst")
        .await
        .expect("create");
    writer.write(b"half").await.expect("write");
    std::mem::forget(writer); // a process killed mid-object never finishes or aborts it
    let temps = |dir: &std::path::Path| {
        crate::common::files_under(dir)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".tmp-"))
            .count()
    };
    assert_eq!(temps(dir.path()), 1);
    let young = local
        .collect_abandoned_writes("backups/", std::time::Duration::from_secs(3600))
        .await
        .expect("collect");
    assert!(young.is_empty() && temps(dir.path()) == 1, "{young:?}");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let old = local
        .collect_abandoned_writes("backups/", std::time::Duration::from_millis(10))
        .await
        .expect("collect");
    assert_eq!((old.len(), temps(dir.path())), (1, 0), "{old:?}");
    assert!(
        local
            .exists("backups/b/kept.csv.zst")
            .await
            .expect("exists"),
        "finished objects stay"
    );
}

/// Writers of one store running side by side, as a backup's workers do: each object has its
/// own bytes, although the writers share the part buffers and the permits for parts in
/// flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_writers_side_by_side_share_part_buffers_without_mixing_bytes() {
    let Some(b) = s3_bench("side_by_side").await else {
        panic!("moto is not running: run the suite through scripts/test.sh");
    };
    let store = std::sync::Arc::new(b.store);
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..3usize {
        let store = store.clone();
        writers.spawn(async move {
            // Different sizes and contents: 2 to 3 parts, and one object under a part.
            let len = if n == 2 {
                MIN_PART_SIZE / 3
            } else {
                MIN_PART_SIZE * (2 + n) + 4321 * (n + 1)
            };
            let body: Vec<u8> = pattern(len + n).into_iter().skip(n).collect();
            let key = format!("backups/side/{n}");
            let mut writer = store.create(&key).await.expect("create");
            // Compressed frames arrive in pieces of a few hundred kilobytes.
            for chunk in body.chunks(150_000 + 1000 * n) {
                writer.write(chunk).await.expect("write");
            }
            writer.finish().await.expect("finish");
            (key, body)
        });
    }
    while let Some(done) = writers.join_next().await {
        let (key, body) = done.expect("writer task");
        let stored = store.get_bytes(&key).await.expect("get");
        assert!(
            stored == body,
            "{key}: the stored bytes differ from the written ones"
        );
    }
    if let Some(s3) = &b.s3 {
        assert_eq!(s3.in_progress_uploads().await, Vec::<String>::new());
    }
}

/// An S3 endpoint on loopback that answers HeadObject (404) and CreateMultipartUpload, and
/// never answers UploadPart: it counts the UploadPart requests it has received.
fn s3_holding_every_part() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let parts = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = parts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut pending = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    // Requests before an UploadPart carry no body: answer them one by one.
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).to_string();
                        pending.drain(..end + 4);
                        let line = head.lines().next().unwrap_or_default().to_string();
                        let reply = if line.contains("partNumber=") {
                            counted.fetch_add(1, Ordering::SeqCst);
                            // Held: read on, answer nothing.
                            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                            return;
                        } else if line.starts_with("HEAD ") {
                            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string()
                        } else if line.starts_with("POST ") && line.contains("uploads") {
                            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>held</UploadId></InitiateMultipartUploadResult>";
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            )
                        } else {
                            "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".to_string()
                        };
                        if conn.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, parts)
}

/// A backup's memory does not grow with its workers by more than one part each: the writers
/// of one store upload at most `PARTS_IN_FLIGHT` parts at a time between them, whatever their
/// number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_writers_of_one_store_upload_at_most_parts_in_flight_between_them() {
    use std::sync::atomic::Ordering;
    let (url, parts) = s3_holding_every_part();
    let store = std::sync::Arc::new(S3Store::new(
        moto_client(&url),
        "held",
        "p",
        None,
        MIN_PART_SIZE,
    ));
    let writers = 4;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..writers {
        let store = store.clone();
        tasks.spawn(async move {
            let mut writer = store
                .create(&format!("backups/held/{n}"))
                .await
                .expect("create");
            for chunk in pattern(MIN_PART_SIZE * 4).chunks(256 * 1024) {
                writer.write(chunk).await.expect("write");
            }
        });
    }
    // Wait until the count of UploadPart requests stays put.
    let mut last = usize::MAX;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = parts.load(Ordering::SeqCst);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    assert_eq!(
        parts.load(Ordering::SeqCst),
        PARTS_IN_FLIGHT,
        "UploadPart requests held at once by {writers} writers of one store"
    );
    assert!(
        tasks.try_join_next().is_none(),
        "a writer went on past the limit, or failed"
    );
    tasks.abort_all();
}
