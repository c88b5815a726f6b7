//! Device memory of the simulator: each allocation its own mapping, ending at a guard page.
//!
//! ```text
//! [guard page][ ... unused head ... | data (len bytes) | slack < 16 bytes ][guard page]
//! ```
//! The data starts 16-byte aligned (what the kernels' vector loads need; CUDA's allocator gives 256)
//! and ends within 16 bytes of the trailing guard page, so a read or write past the end faults at
//! once when the size is a multiple of 16, and otherwise once it passes the slack. The slack holds a
//! canary (0xff bytes) that every launch checks afterwards: a write into it is reported like a fault.
//! Reads inside the slack (at most 15 bytes past the end) are the one out-of-bounds access not caught;
//! they return 0xff bytes (NaN for f32/bf16/f64). A leading guard page catches underflows past the
//! head of the mapping. Addresses are registered, so a fault address can be named: which buffer, how
//! far past its end.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

const CANARY: u8 = 0xff;
const ALIGN: usize = 16;

fn page() -> usize {
    static P: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *P.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize)
}

/// Where an allocation lies: [map, map + map_len) mapped, data at [data, data + len).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub map: usize,
    pub map_len: usize,
    pub data: usize,
    pub len: usize,
}

impl Region {
    /// The first byte of the trailing guard page (= the end of the 16-rounded data).
    pub fn guard(&self) -> usize {
        self.map + self.map_len - page()
    }
}

fn registry() -> &'static Mutex<BTreeMap<usize, Region>> {
    static R: OnceLock<Mutex<BTreeMap<usize, Region>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The allocation whose mapping (guard pages included) holds `addr`.
pub(crate) fn find(addr: usize) -> Option<Region> {
    let map = registry().lock().unwrap_or_else(|e| e.into_inner());
    map.range(..=addr).next_back().map(|(_, r)| *r).filter(|r| addr < r.map + r.map_len)
}

/// One allocation of the simulated device, zero-filled; unmapped on drop.
pub(crate) struct Allocation {
    region: Region,
}

impl Allocation {
    pub fn new(len: usize) -> Result<Allocation> {
        let p = page();
        let rounded = len.div_ceil(ALIGN) * ALIGN;
        let pages = rounded.div_ceil(p);
        let map_len = (pages + 2) * p;
        // SAFETY: a fresh anonymous private mapping; the two guard pages are made inaccessible.
        let map = unsafe {
            let m = libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0);
            if m == libc::MAP_FAILED {
                return Err(Error::OutOfMemory { what: "a buffer of the simulated device".into(), needed_bytes: len as u64, available_bytes: 0 });
            }
            let m = m as usize;
            libc::mprotect(m as *mut _, p, libc::PROT_NONE);
            libc::mprotect((m + map_len - p) as *mut _, p, libc::PROT_NONE);
            m
        };
        let data = map + map_len - p - rounded;
        let region = Region { map, map_len, data, len };
        // SAFETY: the slack [data + len, data + rounded) lies inside the writable pages.
        unsafe { std::ptr::write_bytes((data + len) as *mut u8, CANARY, rounded - len) };
        registry().lock().unwrap_or_else(|e| e.into_inner()).insert(map, region);
        Ok(Allocation { region })
    }

    pub fn addr(&self) -> u64 {
        self.region.data as u64
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        registry().lock().unwrap_or_else(|e| e.into_inner()).remove(&self.region.map);
        // SAFETY: the mapping was made by Allocation::new and nothing refers to it any more (its
        // buffer is being dropped; launches are synchronous).
        unsafe { libc::munmap(self.region.map as *mut _, self.region.map_len) };
    }
}

/// The first byte of the region's slack that no longer holds the canary: its offset past the end.
pub(crate) fn slack_written(r: &Region) -> Option<usize> {
    let end = r.data + r.len;
    // SAFETY: [end, guard) lies inside the region's writable pages while it is registered.
    let slack = unsafe { std::slice::from_raw_parts(end as *const u8, r.guard() - end) };
    slack.iter().position(|&b| b != CANARY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_end_at_their_guard_page_and_are_registered() {
        for len in [0usize, 1, 15, 16, 17, 4096, 4097, 100_000] {
            let a = Allocation::new(len).unwrap();
            let r = find(a.addr() as usize).unwrap_or_else(|| panic!("len {len}: not registered"));
            assert_eq!(r.data, a.addr() as usize);
            assert_eq!(a.addr() % 16, 0, "len {len}: 16-byte aligned");
            assert!(r.guard() - (r.data + len) < 16, "len {len}: slack below 16 bytes");
            assert_eq!(find(r.guard()), Some(r), "the guard page belongs to the allocation");
            assert_eq!(slack_written(&r), None);
            // SAFETY: inside the allocation.
            let data = unsafe { std::slice::from_raw_parts_mut(r.data as *mut u8, len) };
            assert!(data.iter().all(|&b| b == 0), "zero-filled");
            if len % 16 != 0 {
                // SAFETY: the slack is mapped; this is what an out-of-bounds kernel write does.
                unsafe { *((r.data + len) as *mut u8) = 7 };
                assert_eq!(slack_written(&r), Some(0));
            }
            let map = r.map;
            drop(a);
            assert!(find(map + page()).is_none(), "unregistered on drop");
        }
    }
}
