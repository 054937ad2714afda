//! Malformed Postgres wire messages against the real server: garbage before and after
//! start-up, wrong lengths (negative, huge, short), unknown message types, messages cut short,
//! and half-open connections that never finish. The server must answer with an error or close
//! that connection (never an internal error), keep serving everyone else, and give back what
//! the connections held.
//!
//! A fixed seed and budget in CI (`PROGNOS_FUZZ_SEED`, `PROGNOS_FUZZ_CONNECTIONS`, default
//! 300); `scripts/fuzz.sh` runs longer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use prognos_e2e::{Server, env_u64, rss_kib};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn startup() -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0prognos\0database\0prognos\0\0");
    let mut m = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend(((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Read what the server sends until `ReadyForQuery`, an error, a close or the timeout; the
/// SQLSTATEs of the error responses seen, and whether the connection was closed.
fn read_replies(s: &mut TcpStream) -> (Vec<String>, bool) {
    let mut buf = vec![];
    let mut chunk = [0u8; 4096];
    let mut closed = false;
    loop {
        match s.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if ends_with_ready(&buf) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (sqlstates(&buf), closed)
}

fn ends_with_ready(buf: &[u8]) -> bool {
    buf.len() >= 6 && buf[buf.len() - 6] == b'Z'
}

/// The `C` fields of the `E` messages in `buf`.
fn sqlstates(buf: &[u8]) -> Vec<String> {
    let mut out = vec![];
    let mut i = 0;
    while i + 5 <= buf.len() {
        let tag = buf[i];
        let len = i32::from_be_bytes([buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]]);
        if len < 4 {
            break;
        }
        let end = (i + 1 + len as usize).min(buf.len());
        if tag == b'E' {
            for field in buf[i + 5..end].split(|b| *b == 0) {
                if let Some((b'C', code)) = field.split_first() {
                    out.push(String::from_utf8_lossy(code).into_owned());
                }
            }
        }
        i = end;
    }
    out
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.pg).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    s
}

/// A started session: start-up sent and answered.
fn started(server: &Server) -> TcpStream {
    let mut s = connect(server);
    s.write_all(&startup()).expect("startup");
    let (codes, closed) = read_replies(&mut s);
    assert!(codes.is_empty() && !closed, "start-up failed: {codes:?}");
    s
}

async fn still_serving(server: &Server, context: &str) {
    let c = server.connect().await;
    let n: i64 = c
        .query_one(
            "SELECT CAST(count(*) AS BIGINT) FROM generate_series(1, 10)",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{context}: {e}"))
        .get(0);
    assert_eq!(n, 10, "{context}");
}

/// A message after start-up that breaks the protocol in one of several ways.
fn hostile_message(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let tags = b"QPBEDSCHFXdcfpyz\0\xff";
    let tag = tags[rng.random_range(0..tags.len())];
    match rng.random_range(0..7) {
        // A length below the minimum, or negative.
        0 => {
            let mut m = vec![tag];
            m.extend(rng.random_range(-5i32..4).to_be_bytes());
            m
        }
        // A huge length (1 GiB and more).
        1 => {
            let mut m = vec![tag];
            m.extend(rng.random_range(0x4000_0000i32..i32::MAX).to_be_bytes());
            m.extend([0u8; 16]);
            m
        }
        // A well-framed message whose body is garbage.
        2 => {
            let body: Vec<u8> = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect();
            message(tag, &body)
        }
        // A query without its terminating NUL.
        3 => message(b'Q', b"SELECT 1"),
        // Bind / Execute of statements and portals that do not exist, with odd counts.
        4 => {
            let mut body = b"nope\0nope\0".to_vec();
            body.extend(rng.random_range(-3i16..3).to_be_bytes());
            body.extend([0u8; 6]);
            message(b'B', &body)
        }
        // Parse with a parameter count that does not match its type list.
        5 => {
            let mut body = b"s\0SELECT $1\0".to_vec();
            body.extend(1000i16.to_be_bytes());
            message(b'P', &body)
        }
        // Pure noise.
        _ => (0..rng.random_range(1..300))
            .map(|_| rng.random())
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_wire_messages_get_errors_and_the_server_keeps_serving() {
    let seed = env_u64("PROGNOS_FUZZ_SEED", 1);
    let rounds = env_u64("PROGNOS_FUZZ_CONNECTIONS", 300);
    let server = Server::start();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    still_serving(&server, "before").await;
    let warm = rss_kib(server.pid());
    let mut protocol_errors = 0;
    let mut halfway = warm;
    for round in 0..rounds {
        let context = format!("seed {seed} round {round}");
        if rng.random_bool(0.3) {
            // Before start-up: noise, odd protocol numbers, lengths that lie.
            let mut s = connect(&server);
            let mut m = vec![];
            m.extend(rng.random_range(-8i32..100_000).to_be_bytes());
            m.extend(rng.random_range(0i32..300_000_000).to_be_bytes());
            m.extend((0..rng.random_range(0..64)).map(|_| rng.random::<u8>()));
            let _ = s.write_all(&m);
            let _ = read_replies(&mut s);
        } else {
            let mut s = started(&server);
            let m = hostile_message(&mut rng);
            let _ = s.write_all(&m);
            let (codes, closed) = read_replies(&mut s);
            if codes.iter().any(|c| c == "08P01") {
                protocol_errors += 1;
            }
            assert!(
                !codes.iter().any(|c| c == "XX000"),
                "{context}: internal error for {m:?}"
            );
            // If the server kept the connection, it still answers a query on it.
            if !closed && !codes.is_empty() {
                let _ = s.write_all(&message(b'Q', b"SELECT 1\0"));
                let (after, _) = read_replies(&mut s);
                assert!(
                    !after.iter().any(|c| c == "XX000"),
                    "{context}: internal error after {m:?}"
                );
            }
        }
        if round % 50 == 0 {
            still_serving(&server, &context).await;
        }
        if round == rounds / 2 {
            halfway = rss_kib(server.pid());
        }
    }
    // Memory plateaus: the second half of the hostile connections leaves the server no larger
    // than the first half did (beyond allocator noise), so nothing leaks per connection.
    let after_hostile = rss_kib(server.pid());
    eprintln!(
        "RSS {warm} KiB warm, {halfway} KiB halfway, {after_hostile} KiB after the hostile rounds"
    );
    assert!(
        after_hostile <= halfway + halfway / 5 + 16 * 1024,
        "RSS grew from {halfway} KiB halfway to {after_hostile} KiB"
    );
    // Half-open connections: start-up and messages cut short, left hanging while others work.
    let mut hanging = vec![];
    for i in 0..30 {
        let mut s = connect(&server);
        let full = startup();
        if i % 2 == 0 {
            let _ = s.write_all(&full[..full.len() / 2]);
        } else {
            let _ = s.write_all(&full);
            let _ = read_replies(&mut s);
            let _ = s.write_all(&message(b'Q', b"SELECT 1\0")[..6]);
        }
        hanging.push(s);
    }
    still_serving(&server, "with 30 half-open connections").await;
    drop(hanging);
    tokio::time::sleep(Duration::from_millis(500)).await;
    still_serving(&server, "after").await;
    let end = rss_kib(server.pid());
    eprintln!(
        "wire fuzz seed {seed}: {rounds} connections, {protocol_errors} answered 08P01, RSS {warm} KiB before, {end} KiB after"
    );
    assert!(
        protocol_errors > 0,
        "no malformed message was answered 08P01"
    );
    // And back near where it started: a quarter above the warm size at most (allocator
    // caches, the connections' buffers), where a backtrace printed for each decoder panic once
    // more than doubled it.
    assert!(
        end <= warm + warm / 4 + 16 * 1024,
        "RSS grew from {warm} KiB to {end} KiB"
    );
}

/// Each kind of protocol violation PostgreSQL answers with `FATAL 08P01` gets exactly that
/// answer before the connection closes, and the server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_are_answered_08p01_and_close_only_their_connection() {
    let server = Server::start();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown message type", message(b'z', b"abc")),
        ("Parse that ends early", message(b'P', b"\xff\xff")),
        ("Parse without its terminator", message(b'P', b"stmt")),
        ("Bind that ends early", message(b'B', b"\0\0\0\x05")),
        ("Execute that ends early", message(b'E', b"\0")),
        ("length over the maximum", {
            let mut m = vec![b'Q'];
            m.extend(i32::MAX.to_be_bytes());
            m.extend(b"SELECT 1");
            m
        }),
        ("negative length", {
            let mut m = vec![b'Q'];
            m.extend((-16i32).to_be_bytes());
            m
        }),
        // A length counts itself: below 4 is a violation even where the body would parse.
        ("Query whose length is 2", {
            let mut m = vec![b'Q'];
            m.extend(2i32.to_be_bytes());
            m.extend(b"SELECT 1\0");
            m
        }),
        ("Sync whose length is 0", vec![b'S', 0, 0, 0, 0]),
        ("Flush whose length is 3", vec![b'H', 0, 0, 0, 3]),
    ];
    for (what, bytes) in cases {
        let mut s = started(&server);
        s.write_all(&bytes).expect("write");
        let (codes, closed) = read_replies(&mut s);
        assert_eq!(codes, ["08P01"], "{what}: answered {codes:?}");
        assert!(closed, "{what}: the connection stays open");
        still_serving(&server, what).await;
    }
    // The messages in front of a short one run first, as in PostgreSQL.
    let mut s = started(&server);
    let mut bytes = message(b'Q', b"SELECT 1\0");
    bytes.extend([b'Q', 0, 0, 0, 0]);
    s.write_all(&bytes).expect("write");
    let mut replies = Vec::new();
    let _ = s.read_to_end(&mut replies);
    assert!(
        replies.windows(8).any(|w| w == b"SELECT 1"),
        "the query in front did not run: {replies:?}"
    );
    assert_eq!(sqlstates(&replies), ["08P01"]);
    still_serving(&server, "after a query and a short length").await;
    // A start-up packet shorter than its protocol version.
    let mut s = connect(&server);
    s.write_all(&[0, 0, 0, 4, 0, 3, 0, 0]).expect("write");
    let (codes, closed) = read_replies(&mut s);
    assert_eq!(codes, ["08P01"], "short start-up: answered {codes:?}");
    assert!(closed, "short start-up: the connection stays open");
    // Garbage where the start-up message belongs.
    let mut s = connect(&server);
    s.write_all(&[0, 0, 0, 8, 0x12, 0x34, 0x56, 0x78])
        .expect("write");
    let (codes, closed) = read_replies(&mut s);
    assert_eq!(codes, ["08P01"], "bad start-up: answered {codes:?}");
    assert!(closed, "bad start-up: the connection stays open");
    still_serving(&server, "after a bad start-up").await;
}
