//! Profiles: parsing, located errors, merging.

use super::*;

fn parse(src: &str) -> Result<Profile, String> {
    Profile::parse(src, Path::new("profiles/left.toml")).map_err(|e| e.to_string())
}

fn error(src: &str) -> ProfileError {
    Profile::parse(src, Path::new("profiles/left.toml")).unwrap_err()
}

#[test]
fn shipped_profiles_all_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = Profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                p.net.sharenet.is_some(),
                "{} names no sharenet",
                path.display()
            );
            n += 1;
        }
    }
    assert!(n >= 8, "expected the example profiles, found {n}");
}

#[test]
fn unknown_key_names_file_line_section_and_allowed_keys() {
    let e = parse("[guest]\nname = \"x\"\nmemory_mib = 64\nbogus_key = 1\n").unwrap_err();
    assert_eq!(
        e,
        "profiles/left.toml:4:1: unknown key `bogus_key` in [guest]; expected one of name, memory_mib, queue_size, cpu"
    );
}

#[test]
fn unknown_section_is_refused() {
    let e = parse("[gust]\nname = \"x\"\n").unwrap_err();
    assert_eq!(
        e,
        "profiles/left.toml:1:2: unknown section `gust`; expected one of guest, net, workload"
    );
}

#[test]
fn key_in_the_wrong_section_names_its_section() {
    let e = parse("[guest]\nname = \"x\"\nsize = 64\n").unwrap_err();
    assert_eq!(
        e,
        "profiles/left.toml:3:1: unknown key `size` in [guest]; `size` belongs in [workload]"
    );
    let e = parse("name = \"x\"\n[guest]\n").unwrap_err();
    assert_eq!(
        e,
        "profiles/left.toml:1:1: key `name` is outside any section; `name` belongs in [guest]"
    );
    assert!(matches!(
        error("[[net]]\n"),
        ProfileError::NotASection { ref key, .. } if key == "net"
    ));
}

#[test]
fn wrong_type_names_key_and_expected_type_in_words() {
    let e = error("[guest]\nname = \"x\"\nmemory_mib = \"64\"\n");
    let ProfileError::WrongType {
        ref at,
        section,
        ref key,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (at.line, at.col, section, key.as_str()),
        (3, 1, "guest", "memory_mib")
    );
    assert_eq!(
        e.to_string(),
        "profiles/left.toml:3:1: [guest] memory_mib: expected an integer (MiB), got the string \"64\"; drop the quotes"
    );
    assert_eq!(
        parse("[net]\nwait = true\n").unwrap_err(),
        "profiles/left.toml:2:1: [net] wait: expected one of sleep, spin, adaptive, got the boolean true"
    );
    assert_eq!(
        parse("[workload]\ntimeout = \"soon\"\n").unwrap_err(),
        "profiles/left.toml:2:1: [workload] timeout: expected a number of seconds, got the string \"soon\""
    );
}

#[test]
fn first_error_in_the_file_is_reported() {
    let e = parse("[net]\nwait = \"nap\"\n[guest]\nqueue_size = 3\n").unwrap_err();
    assert!(e.starts_with("profiles/left.toml:2:1: [net] wait"), "{e}");
}

#[test]
fn integer_timeout_is_seconds() {
    assert_eq!(
        parse("[workload]\ntimeout = 5\n").unwrap().workload.timeout,
        Some(5.0)
    );
}

#[test]
fn notify_spellings_are_the_flags() {
    for m in [NotifyMode::Always, NotifyMode::Flags, NotifyMode::EventIdx] {
        let src = format!("[net]\nnotify = \"{}\"\n", m.name());
        assert_eq!(parse(&src).unwrap().net.notify, Some(m));
        assert_eq!(m.to_possible_value().unwrap().get_name(), m.name());
    }
}

#[test]
fn bad_enum_value_lists_allowed_values() {
    let e = parse("[net]\nnotify = \"sometimes\"\n").unwrap_err();
    assert!(e.starts_with("profiles/left.toml:2:"), "{e}");
    assert!(
        e.contains("sometimes") && e.contains("always, flags, event-idx"),
        "{e}"
    );
}

#[test]
fn bad_toml_names_line() {
    let e = parse("[guest]\nname = \n").unwrap_err();
    assert!(e.starts_with("profiles/left.toml:2:"), "{e}");
}

#[test]
fn wrong_type_names_line() {
    let e = parse("[workload]\n\ncount = \"many\"\n").unwrap_err();
    assert!(e.starts_with("profiles/left.toml:3:"), "{e}");
    assert!(
        e.contains("[workload] count: expected an integer (packets), got the string \"many\""),
        "{e}"
    );
}

#[test]
fn out_of_range_values_name_key_and_range() {
    let cases = [
        (
            "[guest]\nqueue_size = 300\n",
            "2:1: [guest] queue_size: 300 is not a power of two",
        ),
        ("[guest]\nqueue_size = 65536\n", "[guest] queue_size"),
        (
            "[guest]\nmemory_mib = 0\n",
            "[guest] memory_mib: 0 is out of range",
        ),
        (
            "[workload]\nsize = 100000\n",
            "2:1: [workload] size: 100000 is out of range; expected 16..=65535",
        ),
        // 0 is a sink's "until the end of stream"; the workload decides
        // later (see `count_zero_in_a_profile_is_for_a_sink_only`).
        ("[workload]\ncount = -1\n", "[workload] count"),
        ("[workload]\ntimeout = -1.0\n", "[workload] timeout"),
        (
            "[net]\nsharenet = \"bogus:/x\"\n",
            "[net] sharenet: unknown transport `bogus`",
        ),
    ];
    for (src, want) in cases {
        let e = parse(src).unwrap_err();
        assert!(e.contains(want), "{src:?}: got {e}");
        assert!(e.starts_with("profiles/left.toml:"), "{e}");
    }
}

#[test]
fn flags_override_profile_and_sources_are_reported() {
    let p =
        parse("[guest]\nqueue_size = 64\n[net]\nsharenet = \"unix:/tmp/a\"\nnotify = \"flags\"\n")
            .unwrap();
    let flags = RunArgs {
        notify: Some(NotifyMode::Always),
        ..RunArgs::default()
    };
    let m = merge(&flags, Some((Path::new("p.toml"), &p)));
    let cfg = m.args.resolve().unwrap();
    assert_eq!(cfg.notify, NotifyMode::Always);
    assert_eq!(cfg.queue_size, 64);
    assert_eq!(cfg.spec.to_string(), "unix:/tmp/a");
    let text = m.to_toml(&m.args.settings().unwrap());
    assert!(text.contains("notify = \"always\""), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("notify") && l.ends_with("# flag")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("queue_size") && l.ends_with("# profile p.toml")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("size") && l.ends_with("# default")),
        "{text}"
    );
    // The printed config is itself a valid profile.
    parse(&text).unwrap();
}

#[test]
fn printed_config_freezes_neither_name_nor_missing_sharenet() {
    let m = merge(&RunArgs::default(), None);
    let text = m.to_toml(&m.args.settings().unwrap());
    assert!(
        text.contains("# name = (default: derived from the pid)"),
        "{text}"
    );
    assert!(text.contains("# sharenet = (unset"), "{text}");
    assert!(!text.contains("guest-"), "{text}");
    let p = parse(&text).unwrap();
    assert!(p.guest.name.is_none() && p.net.sharenet.is_none());
}

#[test]
fn count_zero_in_a_profile_is_for_a_sink_only() {
    let sink = parse("[workload]\nkind = \"sink\"\ncount = 0\n").unwrap();
    let m = merge(&RunArgs::default(), Some((Path::new("p.toml"), &sink)));
    assert_eq!(m.args.settings().unwrap().count, 0);
    let stream = parse("[workload]\nkind = \"stream\"\ncount = 0\n").unwrap();
    let m = merge(&RunArgs::default(), Some((Path::new("p.toml"), &stream)));
    let e = m.args.settings().unwrap_err().to_string();
    assert!(e.contains("count = 0") && e.contains("stream"), "{e}");
}

#[test]
fn reconnect_comes_from_net_section() {
    let p = parse("[net]\nreconnect = true\n").unwrap();
    let m = merge(&RunArgs::default(), Some((Path::new("p.toml"), &p)));
    assert!(m.args.settings().unwrap().reconnect);
    let text = m.to_toml(&m.args.settings().unwrap());
    assert!(
        text.lines()
            .any(|l| l.starts_with("reconnect = true") && l.ends_with("# profile p.toml")),
        "{text}"
    );
    let e = parse("[net]\nreconnect = \"yes\"\n").unwrap_err();
    assert!(e.contains("[net] reconnect"), "{e}");
}

#[test]
fn share_comes_from_net_section_and_defaults_to_guest() {
    use crate::cli::config::Share;
    let none = merge(&RunArgs::default(), None);
    assert_eq!(none.args.settings().unwrap().share, Share::Guest);
    let p = parse("[net]\nshare = \"exchange\"\n").unwrap();
    let m = merge(&RunArgs::default(), Some((Path::new("p.toml"), &p)));
    assert_eq!(m.args.settings().unwrap().share, Share::Exchange);
    let text = m.to_toml(&m.args.settings().unwrap());
    assert!(
        text.lines()
            .any(|l| l.starts_with("share = \"exchange\"") && l.ends_with("# profile p.toml")),
        "{text}"
    );
    let e = parse("[net]\nshare = \"all\"\n").unwrap_err();
    assert!(e.contains("[net] share"), "{e}");
}
