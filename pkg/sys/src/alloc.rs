//! Memory settings for the long-running processes: glibc's allocator with a fixed mmap threshold
//! (so large, short-lived buffers go back to the kernel when freed instead of staying in the heap)
//! and at most two arenas, trimming of freed heap pages after bulk work (loading the metrics
//! history), and dropping the binary's code pages that only startup used from the resident set.
//! Without glibc (musl) the allocator calls do nothing.
#![allow(unsafe_code)]

/// Allocations of this size or more are mmapped and returned to the kernel when freed. Setting it
/// also turns off glibc's dynamic threshold, which otherwise rises to the largest buffer freed so far
/// (up to 32 MiB), after which such buffers are carved from the heap and stay resident.
pub const MMAP_THRESHOLD: usize = 256 << 10;

/// At most this many malloc arenas (glibc's default is 8 per core; each keeps its own free pages).
pub const ARENA_MAX: usize = 2;

/// Applies [`MMAP_THRESHOLD`] and [`ARENA_MAX`]; call it first thing in `main` of a long-running
/// process, before any thread starts. Returns whether glibc accepted both settings.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threshold = i32::try_from(MMAP_THRESHOLD).unwrap_or(i32::MAX);
        let arenas = i32::try_from(ARENA_MAX).unwrap_or(i32::MAX);
        // SAFETY: mallopt only changes glibc's allocator parameters; it takes plain integers and
        // touches no memory of ours. Called before other threads allocate, as glibc advises.
        unsafe {
            nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, threshold) == 1
                && nix::libc::mallopt(nix::libc::M_ARENA_MAX, arenas) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Gives the free pages of every malloc arena back to the kernel (`malloc_trim(0)`); call it after
/// bulk work that allocated and freed a lot. Returns whether any memory was released.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes a plain integer and only returns free pages of glibc's own
        // arenas to the kernel (madvise); it is thread-safe and leaves live allocations alone.
        unsafe { nix::libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Asks the kernel to drop this process' mappings of its own executable file (code, read-only
/// data) from its resident set (`madvise(MADV_PAGEOUT)`); the pages still in use come back on their
/// next access from the page cache. Call it once startup is over: a large binary touches far more
/// code while starting than while running. Returns the bytes advised.
pub fn release_startup_code() -> Result<u64, crate::SysError> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| crate::os_err("readlink", "/proc/self/exe", e))?;
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| crate::os_err("read", "/proc/self/maps", e))?;
    let mut advised = 0u64;
    for (start, end) in exe_ranges(&maps, &exe.to_string_lossy()) {
        let len = end - start;
        // SAFETY: the range is a whole mapping of our own executable file that is not writable
        // (code or read-only data, from /proc/self/maps). MADV_PAGEOUT only reclaims pages: their
        // contents never change and are read back from the file on the next access, so no Rust
        // reference into the range is affected. An error is reported, never ignored silently.
        let rc = unsafe {
            nix::libc::madvise(
                start as *mut nix::libc::c_void,
                len,
                nix::libc::MADV_PAGEOUT,
            )
        };
        if rc != 0 {
            return Err(crate::os_err(
                "madvise(MADV_PAGEOUT)",
                format!("{start:#x}+{len}"),
                std::io::Error::last_os_error(),
            ));
        }
        advised += len as u64;
    }
    Ok(advised)
}

/// The address ranges of the non-writable mappings of `exe` in a `/proc/<pid>/maps` text.
fn exe_ranges(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if path != exe || !perms.starts_with('r') || perms.as_bytes().get(1) != Some(&b'-') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_ranges_takes_only_read_only_mappings_of_the_file() {
        let maps = "\
5600a000-5600b000 r--p 00000000 fd:00 12 /usr/bin/mini
5600b000-5600f000 r-xp 00001000 fd:00 12 /usr/bin/mini
5600f000-56010000 rw-p 00005000 fd:00 12 /usr/bin/mini
56010000-56011000 r-xp 00000000 fd:00 13 /usr/bin/mini-old
7f00000000-7f00001000 rw-p 00000000 00:00 0
";
        assert_eq!(
            exe_ranges(maps, "/usr/bin/mini"),
            vec![(0x5600a000, 0x5600b000), (0x5600b000, 0x5600f000)]
        );
    }

    #[test]
    fn release_startup_code_advises_this_test_binary_and_it_keeps_running() {
        let advised = release_startup_code().unwrap();
        assert!(advised > 0);
    }

    #[test]
    fn tune_allocator_on_glibc_accepts_the_settings() {
        assert_eq!(tune_allocator(), cfg!(target_env = "gnu"));
    }

    #[test]
    fn release_free_memory_after_freeing_many_blocks_releases_and_keeps_live_data() {
        // 20 MB of small blocks (heap, not mmap) freed, then trimmed: pages go back to the kernel
        // and live blocks keep their contents
        let keep: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1000]).collect();
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|_| vec![7u8; 1000]).collect();
        drop(std::hint::black_box(blocks));
        assert_eq!(release_free_memory(), cfg!(target_env = "gnu"));
        assert!(keep
            .iter()
            .enumerate()
            .all(|(i, b)| b.iter().all(|&x| x == i as u8)));
    }
}
