//! Flags over a profile over defaults, remembering where each value came from.

use super::*;

/// Where a merged value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// The profile.
    Profile,
    /// The built-in default.
    Default,
}

impl Source {
    fn label(self, profile: Option<&Path>) -> String {
        match self {
            Source::Flag => "flag".into(),
            Source::Profile => format!(
                "profile {}",
                profile.map_or(String::new(), |p| p.display().to_string())
            ),
            Source::Default => "default".into(),
        }
    }
}

/// Flags merged over a profile, with where each value came from.
pub struct Merged {
    /// The merged flags (resolve them for a config).
    pub args: RunArgs,
    /// Per key: `(section, key, source)`.
    pub sources: Vec<(&'static str, &'static str, Source)>,
    /// The profile file, if any.
    pub profile: Option<PathBuf>,
}

/// Fill every flag the user did not give from the profile.
pub fn merge(flags: &RunArgs, profile: Option<(&Path, &Profile)>) -> Merged {
    let mut a = flags.clone();
    let mut sources = Vec::new();
    let empty = Profile::default();
    let p = profile.map_or(&empty, |(_, p)| p);
    macro_rules! take {
        ($section:literal, $key:literal, $field:ident, $value:expr) => {{
            let src = if a.$field.is_some() {
                Source::Flag
            } else if let Some(v) = $value {
                a.$field = Some(v);
                Source::Profile
            } else {
                Source::Default
            };
            sources.push(($section, $key, src));
        }};
    }
    take!("guest", "name", name, p.guest.name.clone());
    take!("guest", "memory_mib", memory, p.guest.memory_mib);
    take!("guest", "queue_size", queue_size, p.guest.queue_size);
    take!("guest", "cpu", cpu, p.guest.cpu);
    take!("net", "sharenet", sharenet, p.net.sharenet.clone());
    take!("net", "notify", notify, p.net.notify);
    take!("net", "writes", writes, p.net.writes);
    take!("net", "wait", wait, p.net.wait);
    let src = match (a.reconnect, p.net.reconnect) {
        (true, _) => Source::Flag,
        (false, Some(on)) => {
            a.reconnect = on;
            Source::Profile
        }
        (false, None) => Source::Default,
    };
    sources.push(("net", "reconnect", src));
    take!("net", "share", share, p.net.share);
    take!("net", "capture", capture, p.net.capture.clone());
    take!("net", "snaplen", snaplen, p.net.snaplen);
    take!("net", "mtu", mtu, p.net.mtu);
    take!("net", "offloads", offloads, p.net.offloads);
    take!("workload", "kind", workload, p.workload.kind);
    take!("workload", "count", count, p.workload.count);
    take!("workload", "size", size, p.workload.size);
    take!("workload", "payload", payload, p.workload.payload);
    take!("workload", "timeout", timeout, p.workload.timeout);
    let src = match (a.gso, p.workload.gso) {
        (true, _) => Source::Flag,
        (false, Some(on)) => {
            a.gso = on;
            Source::Profile
        }
        (false, None) => Source::Default,
    };
    sources.push(("workload", "gso", src));
    Merged {
        args: a,
        sources,
        profile: profile.map(|(p, _)| p.to_path_buf()),
    }
}

impl Merged {
    /// The merged settings as TOML, each value commented with its source.
    /// What has no fixed default and was not given (the name, derived from
    /// the pid at run time; the rendezvous) is written as a comment, so the
    /// output is itself a valid profile that freezes nothing by accident.
    pub fn to_toml(&self, s: &Settings) -> String {
        let q = |s: &str| Some(Value::String(s.to_string()).to_string());
        let rows: [(&str, &str, Option<String>); 20] = [
            ("guest", "name", s.name.as_deref().and_then(q)),
            ("guest", "memory_mib", Some(s.memory_mib.to_string())),
            ("guest", "queue_size", Some(s.queue_size.to_string())),
            ("guest", "cpu", s.cpu.map(|c| c.to_string())),
            (
                "net",
                "sharenet",
                s.spec.as_ref().and_then(|spec| q(&spec.to_string())),
            ),
            ("net", "notify", q(s.notify.name())),
            ("net", "writes", q(s.writes.name())),
            ("net", "wait", q(s.wait.name())),
            ("net", "reconnect", Some(s.reconnect.to_string())),
            ("net", "share", q(s.share.name())),
            (
                "net",
                "capture",
                s.capture.as_ref().and_then(|p| q(&p.display().to_string())),
            ),
            ("net", "snaplen", s.snaplen.map(|n| n.to_string())),
            ("net", "mtu", s.mtu.map(|n| n.to_string())),
            ("net", "offloads", q(s.offloads.name())),
            ("workload", "kind", q(s.workload.name())),
            ("workload", "count", Some(s.count.to_string())),
            ("workload", "size", Some(s.size.to_string())),
            ("workload", "payload", q(s.payload.name())),
            (
                "workload",
                "timeout",
                Some(format!("{:?}", s.timeout.as_secs_f64())),
            ),
            ("workload", "gso", Some(s.gso.to_string())),
        ];
        let mut text = String::new();
        let mut current = "";
        for (section, key, value) in rows {
            if section != current {
                if !current.is_empty() {
                    text.push('\n');
                }
                text += &format!("[{section}]\n");
                current = section;
            }
            let Some(value) = value else {
                let unset = match key {
                    "name" => "(default: derived from the pid)",
                    "cpu" => "(default: not pinned)",
                    "capture" => "(default: no capture)",
                    "snaplen" => "(default: 65535 with a capture)",
                    "mtu" => "(default: none stated)",
                    _ => "(unset: give --sharenet KIND:PATH, or set it here)",
                };
                text += &format!("# {key} = {unset}\n");
                continue;
            };
            let source = self
                .sources
                .iter()
                .find(|(s, k, _)| *s == section && *k == key)
                .map_or(Source::Default, |(_, _, s)| *s);
            let mut label = source.label(self.profile.as_deref());
            if key == "memory_mib" && source == Source::Default {
                label += &format!(" (fits queue_size {})", s.queue_size);
            }
            text += &format!("{:<32} # {label}\n", format!("{key} = {value}"));
        }
        text
    }
}
