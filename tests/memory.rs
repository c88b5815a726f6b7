//! The memory refusal: cgroup limits (v1 and v2, on fake cgroup trees) lower MemAvailable, and the
//! estimates saturate instead of wrapping on absurd user sizes.

mod common;
use common::*;
use drpo::config::ModelConfig;
use drpo::memory::{cgroup_available, generation, mem_available, training};
use std::path::Path;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn cgroup_v2_minimum_over_ancestors() {
    let root = scratch_dir("cgroup-v2");
    write(&root, "memory.max", "max\n");
    write(&root, "memory.current", "123456789\n");
    write(&root, "a/memory.max", "1000000\n");
    write(&root, "a/memory.current", "400000\n");
    write(&root, "a/b/memory.max", "max\n");
    write(&root, "a/b/memory.current", "100\n");
    assert_eq!(cgroup_available(&root, "0::/a/b\n"), Some(600_000));
    // a tighter limit below wins
    write(&root, "a/b/memory.max", "500000\n");
    assert_eq!(cgroup_available(&root, "0::/a/b\n"), Some(499_900));
    // over the limit: nothing left, not a wrapped huge number
    write(&root, "a/b/memory.current", "700000\n");
    assert_eq!(cgroup_available(&root, "0::/a/b\n"), Some(0));
    // no limit anywhere
    assert_eq!(cgroup_available(&root, "0::/\n"), None);
}

#[test]
fn cgroup_v1_and_namespaced_paths() {
    let root = scratch_dir("cgroup-v1");
    // v1's "unlimited" is a huge number; the parent's limit binds
    write(&root, "memory/memory.limit_in_bytes", "9223372036854771712\n");
    write(&root, "memory/memory.usage_in_bytes", "13966315520\n");
    write(&root, "memory/docker/memory.limit_in_bytes", "2000000\n");
    write(&root, "memory/docker/memory.usage_in_bytes", "1500000\n");
    write(&root, "memory/docker/x/memory.limit_in_bytes", "9223372036854771712\n");
    write(&root, "memory/docker/x/memory.usage_in_bytes", "5\n");
    let proc = "9:name=systemd:/\n4:cpu,memory:/docker/x\n1:cpu:/\n0::/\n";
    assert_eq!(cgroup_available(&root, proc), Some(500_000));
    // inside a container the listed path may not exist under the mount: the levels that do count
    assert_eq!(cgroup_available(&root, "4:memory:/elsewhere/abc\n"), Some(9223372036854771712 - 13966315520));
    // no memory controller listed
    assert_eq!(cgroup_available(&root, "3:cpuset:/\n"), None);
}

#[test]
fn meminfo_parsing() {
    let text = "MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   23271592 kB\n";
    assert_eq!(mem_available(text), Some(23271592 * 1024));
    assert_eq!(mem_available("MemTotal: 5 kB\n"), None);
    // on this machine: whatever is found is at most MemAvailable
    if let (Some(all), Ok(text)) = (drpo::memory::available_bytes(), std::fs::read_to_string("/proc/meminfo")) {
        let mem = mem_available(&text).unwrap();
        println!("available {all} (MemAvailable {mem})");
        assert!(all <= mem + (64 << 20), "cgroup-lowered figure above MemAvailable"); // meminfo moves between reads
    }
}

#[test]
fn estimates_saturate() {
    let cfg = ModelConfig::from_dir(&fixture("qwen2-tiny")).unwrap();
    // --max-new-tokens 18446744073709551613 with a 2-token prompt: max_len = u64::MAX
    let e = generation(&cfg, 4, 1, 2, u64::MAX);
    assert_eq!(e.kv_cache, u64::MAX);
    assert_eq!(e.total(), u64::MAX);
    let e = generation(&cfg, 4, u64::MAX, u64::MAX, u64::MAX);
    assert_eq!((e.activations, e.total()), (u64::MAX, u64::MAX));
    let e = training(&cfg, 4, u64::MAX, u64::MAX);
    assert_eq!((e.activations, e.total()), (u64::MAX, u64::MAX));
    // ordinary sizes are the formula, computed here independently
    let (l, kvd) = (cfg.num_hidden_layers as u64, cfg.kv_dim() as u64);
    let e = generation(&cfg, 4, 3, 10, 50);
    assert_eq!(e.kv_cache, 3 * 50 * 2 * l * kvd * 4);
    let p = drpo::layout::ParamLayout::new(&cfg).total as u64;
    assert_eq!(e.weights, 4 * p);
}
