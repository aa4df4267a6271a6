//! Smoke tests of `lguest-launcher bench --quick` and `demo` with tiny
//! counts: every cell and baseline runs once, all three outputs are written
//! and well-formed, the report carries its "What to use" section, and the
//! demo prints its table once, after its progress. The figures themselves
//! are meaningless at these counts.

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
    // The polling pings are judged from a cell of this run, not "no data".
    for wait in ["spin", "adaptive"] {
        let label = format!("| ping p50, wait {wait} (best cell) ≤ 1 µs | ");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&label))
            .unwrap_or_else(|| panic!("no {wait} ping target:\n{stdout}"));
        assert!(
            line.contains(" µs (") && !line.contains("no successful cell"),
            "{line}"
        );
    }
    let what = stdout
        .split("## What to use")
        .nth(1)
        .unwrap_or_else(|| panic!("no What to use section:\n{stdout}"));
    for pick in [
        "**Lowest latency**",
        "**Highest throughput**",
        "**Lowest CPU per packet**",
        "**Best default**",
    ] {
        assert!(what.contains(pick), "What to use lacks {pick}:\n{what}");
    }

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(doc["machine"]["cpus"].as_u64().unwrap_or(0) >= 1);
    let rows = doc["results"].as_array().expect("results list");

    // The advice names configurations that are rows of this very run, with
    // the figure each row has.
    let advice = &doc["advice"];
    assert!(advice["rule"].as_str().is_some(), "advice without its rule");
    let config = |r: &serde_json::Value| {
        format!(
            "{} {}/{}/{}",
            r["transport"].as_str().unwrap_or("-"),
            r["notify"].as_str().unwrap_or("-"),
            r["writes"].as_str().unwrap_or("-"),
            r["wait"].as_str().unwrap_or("-")
        )
    };
    for (pick, workload, size, metric) in [
        ("lowest_latency", "ping", 64, "p50_us"),
        ("highest_throughput", "stream", 1500, "mpps"),
        ("lowest_cpu", "stream", 1500, "cpu_s_per_mpkt"),
    ] {
        let p = &advice[pick];
        let name = p["config"]
            .as_str()
            .unwrap_or_else(|| panic!("advice.{pick} missing: {advice}"));
        let row = rows
            .iter()
            .find(|r| r["workload"] == workload && r["size"] == size && config(r) == name)
            .unwrap_or_else(|| panic!("advice.{pick} names {name}, not a {workload} row"));
        assert_eq!(
            p["value"], row[metric],
            "advice.{pick} figure is not its row's"
        );
    }
    // --quick includes the default wait mode.
    assert!(
        rows.iter()
            .any(|r| r["wait"] == "adaptive" && r["workload"] == "ping"),
        "--quick has no adaptive ping cell"
    );
    // Only sleeping pings are compared with a blocking round trip.
    for r in rows
        .iter()
        .filter(|r| r["workload"] == "ping" && r["wait"] != "sleep")
    {
        assert!(
            r["transport"]
                .as_str()
                .unwrap_or("")
                .starts_with("baseline-")
                || r["ratio"].is_null(),
            "polling ping with a ratio to a blocking round trip: {r}"
        );
    }
    // Every spread is in the unit of its own figure.
    for r in rows {
        if let Some(sp) = r.get("spread").filter(|s| !s.is_null()) {
            let metric = sp["metric"].as_str().unwrap_or("");
            let unit = match metric {
                "p50_us" => "µs",
                "gbytes_per_s" => "GB/s",
                "cpu_s_per_mpkt" => "CPU s/Mpkt",
                _ => "Mpps",
            };
            assert_eq!(sp["unit"], unit, "spread unit of {metric}: {r}");
            assert!(!r[metric].is_null(), "a spread with no figure: {r}");
        }
    }
    // The switch rows: each pair count direct and through a switch, the
    // switch row's ratio its CPU per frame over the direct row's.
    for w in [
        "pairs-2-direct",
        "pairs-2-switch",
        "pairs-4-direct",
        "pairs-4-switch",
    ] {
        assert!(rows.iter().any(|r| r["workload"] == w), "no {w} row");
    }
    for r in rows
        .iter()
        .filter(|r| r["workload"] == "pairs-2-switch" && r["status"] == "ok")
    {
        assert!(
            r["ratio"].as_f64().unwrap_or(0.0) > 0.0,
            "switch row without its ratio: {r}"
        );
    }
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

#[test]
fn demo_prints_its_table_once_after_the_progress_with_both_ping_columns() {
    let out = Command::new(env!("CARGO_BIN_EXE_lguest-launcher"))
        .args(["demo", "--count", "2000", "--pings", "20"])
        .args(["--transports", "fifo,eventfd"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    // Progress on stderr only; stdout is the table and nothing else.
    assert!(!stdout.contains("demo:"), "progress on stdout:\n{stdout}");
    assert!(
        stderr.contains("demo: fifo"),
        "no progress on stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "header + one line per transport:\n{stdout}");
    let header = lines[0];
    for col in [
        "Mpps",
        "notif/packet",
        "ping p50 adaptive",
        "ping p50 sleep",
    ] {
        assert!(header.contains(col), "no `{col}` column: {header}");
    }
    for (line, name) in lines[1..].iter().zip(["fifo", "eventfd"]) {
        assert!(line.starts_with(name), "row order: {line}");
        // Both ping columns carry a figure in µs.
        assert_eq!(line.matches(" µs").count(), 2, "two ping p50s: {line}");
    }
}
