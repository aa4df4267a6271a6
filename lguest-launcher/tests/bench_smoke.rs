//! Smoke test of `lguest-launcher bench --quick` with tiny counts: every
//! cell and baseline runs once, and all three outputs are written and
//! well-formed. The figures themselves are meaningless at these counts.

use std::path::PathBuf;
use std::process::Command;

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("sharenet-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bench_quick_with_tiny_counts_writes_json_markdown_and_svg() {
    let dir = scratch();
    let (json, md, svg) = (dir.join("b.json"), dir.join("b.md"), dir.join("b.svg"));
    let out = Command::new(env!("CARGO_BIN_EXE_lguest-launcher"))
        .args(["bench", "--quick", "--count-scale", "0.01", "--runs", "1"])
        .args(["--cell-timeout", "20", "--quiet"])
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed ({}):\n{}\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("## Targets"),
        "no targets section:\n{stdout}"
    );

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(doc["machine"]["cpus"].as_u64().unwrap_or(0) >= 1);
    let rows = doc["results"].as_array().expect("results list");
    let has = |t: &str| rows.iter().any(|r| r["transport"] == t);
    for t in [
        "fifo",
        "unix",
        "eventfd",
        "baseline-seqpacket",
        "baseline-spsc",
        "baseline-memcpy",
        "baseline-devq-sharenet",
        "baseline-devq-virtio-queue",
        "baseline-rtt-pipe",
        "baseline-rtt-fifo",
        "baseline-rtt-eventfd",
        "baseline-rtt-unix",
    ] {
        assert!(has(t), "no row for {t}");
    }
    for r in rows {
        for k in [
            "notify",
            "writes",
            "wait",
            "size",
            "workload",
            "mpps",
            "gbps",
            "notifications_per_packet",
            "cpu_s_per_mpkt",
            "p50_us",
            "p99_us",
        ] {
            assert!(r.get(k).is_some(), "row without `{k}`: {r}");
        }
        if r["workload"] == "stream" && r["status"] == "ok" {
            assert!(
                r["mpps"].as_f64().unwrap_or(0.0) > 0.0,
                "stream row without Mpps: {r}"
            );
        }
        if r["workload"] == "ping" && r["status"] == "ok" {
            assert!(
                r["p50_us"].as_f64().unwrap_or(0.0) > 0.0,
                "ping row without p50: {r}"
            );
        }
    }
    let devq = rows
        .iter()
        .find(|r| r["transport"] == "baseline-devq-sharenet")
        .expect("devq row");
    assert!(
        devq["status"] != "ok" || devq["ratio"].as_f64().unwrap_or(0.0) > 0.0,
        "devq row without its ratio to virtio-queue: {devq}"
    );
    let ok_streams = rows
        .iter()
        .filter(|r| r["workload"] == "stream" && r["status"] == "ok")
        .count();
    assert!(ok_streams > 0, "no stream cell succeeded");

    let md_text = std::fs::read_to_string(&md).unwrap();
    assert!(md_text.contains("| transport |"));
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg_text.starts_with("<svg") || svg_text.starts_with("<?xml"),
        "not an SVG: {}",
        &svg_text[..svg_text.len().min(80)]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
