//! The container's own resource limits, read from its cgroup: what the webhook's body budget
//! and the collector's memory budget are sized from when nothing is configured.

use std::path::Path;

use ingress_tap_core::collect::budget::{MemoryBudget, DEFAULT_MEMORY_LIMIT};

/// The collector's memory shares for the limit in force: `configured`, else the container's
/// (cgroup) limit, else [`DEFAULT_MEMORY_LIMIT`].
pub fn memory_budget(configured: Option<usize>) -> MemoryBudget {
    let limit = configured
        .or_else(container_memory_limit)
        .unwrap_or(DEFAULT_MEMORY_LIMIT);
    MemoryBudget::of_limit(limit)
}

/// The container's memory limit: cgroup v2 `memory.max`, else cgroup v1
/// `memory.limit_in_bytes`. `None` when unlimited or unreadable.
pub fn container_memory_limit() -> Option<usize> {
    container_memory_limit_in(Path::new("/sys/fs/cgroup"))
}

pub(crate) fn container_memory_limit_in(root: &Path) -> Option<usize> {
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    let text = read(&root.join("memory.max"))
        .or_else(|| read(&root.join("memory/memory.limit_in_bytes")))?;
    let limit: u64 = text.trim().parse().ok()?;
    // cgroup v1 writes "no limit" as a page-rounded i64::MAX.
    if limit >= 1 << 60 {
        return None;
    }
    usize::try_from(limit).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_read_from_cgroup_v2_then_v1() {
        let mib = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(container_memory_limit_in(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(container_memory_limit_in(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "134217728\n").unwrap();
        assert_eq!(container_memory_limit_in(dir.path()), Some(128 * mib));
        std::fs::remove_file(dir.path().join("memory.max")).unwrap();
        std::fs::create_dir(dir.path().join("memory")).unwrap();
        std::fs::write(
            dir.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(container_memory_limit_in(dir.path()), None);
    }
}
