//! Memory settings for the long-running processes: glibc's allocator with a fixed mmap threshold
//! (so large, short-lived buffers go back to the kernel when freed instead of staying in the heap)
//! and one arena, trimming of freed heap pages after bulk work (loading the metrics
//! history, and whenever the arenas hold much freed memory), the allocator's figures for
//! `/metrics`, and dropping the binary's code pages that only startup used from the resident set
//! (read back a page at a time afterwards).
//! Without glibc (musl) the allocator calls do nothing.
#![allow(unsafe_code)]

/// Allocations of this size or more are mmapped and returned to the kernel when freed. Setting it
/// also turns off glibc's dynamic threshold, which otherwise rises to the largest buffer freed so far
/// (up to 32 MiB), after which such buffers are carved from the heap and stay resident.
pub const MMAP_THRESHOLD: usize = 256 << 10;

/// At most this many malloc arenas (glibc's default is 8 per core). Each arena keeps its own free
/// pages between its live blocks: a server holding a day of metrics for 1,500 pods kept ~4.7 MiB
/// more resident with two arenas than with one. Threads still allocate small blocks without the
/// arena's lock from their own cache (tcache).
pub const ARENA_MAX: usize = 1;

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

/// What glibc's allocator holds, over all arenas (`mallinfo`; its fields are C ints, so each
/// figure wraps at 4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapUsage {
    /// Bytes in live allocations carved from the arenas.
    pub in_use: u64,
    /// Bytes freed but still held by the arenas (resident until trimmed or reused).
    pub free_held: u64,
    /// Bytes in live allocations mmapped on their own (at least [`MMAP_THRESHOLD`] each).
    pub mmapped: u64,
}

/// The allocator's figures now; `None` without glibc.
pub fn heap_usage() -> Option<HeapUsage> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // mallinfo, not mallinfo2: the release binary must load on glibc 2.17
        // SAFETY: mallinfo takes no arguments and returns a struct by value; it only reads
        // glibc's arena bookkeeping under the arenas' own locks.
        #[allow(deprecated)]
        let info = unsafe { nix::libc::mallinfo() };
        let figure = |v: nix::libc::c_int| u64::from(v as u32);
        Some(HeapUsage {
            in_use: figure(info.uordblks),
            free_held: figure(info.fordblks),
            mmapped: figure(info.hblkhd),
        })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Trims the arenas ([`release_free_memory`]) whenever they came to hold more than `limit` bytes
/// of freed memory beyond what they held after the last trim (trimming returns the pages but the
/// freed chunks stay counted, so the figure itself does not fall). Call [`HeapTrimmer::tick`] every
/// few seconds: a long-running server's freed pages otherwise stay resident after a burst of work.
#[derive(Debug, Clone)]
pub struct HeapTrimmer {
    limit: u64,
    baseline: u64,
}

impl HeapTrimmer {
    pub fn new(limit: u64) -> Self {
        HeapTrimmer { limit, baseline: 0 }
    }

    /// Reads the figures and trims when [`Self::decide`] says so; `None` without glibc.
    pub fn tick(&mut self) -> Option<(HeapUsage, bool)> {
        let usage = heap_usage()?;
        let trim = self.decide(usage.free_held);
        if trim {
            release_free_memory();
        }
        Some((usage, trim))
    }

    /// Whether freed memory held now (`free_held`) calls for a trim; remembers it when it does.
    pub fn decide(&mut self, free_held: u64) -> bool {
        // freed chunks reused since: the next trim is due from the lower figure
        self.baseline = self.baseline.min(free_held);
        if free_held > self.baseline.saturating_add(self.limit) {
            self.baseline = free_held;
            return true;
        }
        false
    }
}

/// Asks the kernel to drop this process' mappings of its own executable file (code, read-only
/// data) from its resident set (`madvise(MADV_PAGEOUT)`), and to read them back from then on one
/// page at a time (`MADV_RANDOM`): the pages still in use come back on their next access. Call it
/// once startup is over: a large binary touches far more code while starting than while running.
/// The kernel still maps 64 KiB around each page touched (fault-around) where the page cache has
/// them, and from Linux 6.16 it reads ahead around missed pages of executable mappings whatever
/// the advice; that is why the release build links the functions the server runs all the time
/// next to each other (scripts/hot_functions.sh). Returns the bytes advised.
pub fn release_startup_code() -> Result<u64, crate::SysError> {
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(|e| crate::os_err("readlink", "/proc/self/exe", e))?;
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| crate::os_err("read", "/proc/self/maps", e))?;
    let mut advised = 0u64;
    for (start, end) in exe_ranges(&maps, &exe.to_string_lossy()) {
        let len = end - start;
        for (advice, name) in [
            (nix::libc::MADV_PAGEOUT, "madvise(MADV_PAGEOUT)"),
            (nix::libc::MADV_RANDOM, "madvise(MADV_RANDOM)"),
        ] {
            // SAFETY: the range is a whole mapping of our own executable file that is not
            // writable (code or read-only data, from /proc/self/maps). MADV_PAGEOUT only
            // reclaims pages and MADV_RANDOM only changes how they are read back: their contents
            // never change and come back from the file on the next access, so no Rust reference
            // into the range is affected. An error is reported, never ignored silently.
            let rc = unsafe { nix::libc::madvise(start as *mut nix::libc::c_void, len, advice) };
            if rc != 0 {
                return Err(crate::os_err(
                    name,
                    format!("{start:#x}+{len}"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        advised += len as u64;
    }
    Ok(advised)
}

/// How long after the start [`keep_lean`] pages out the code only startup ran and trims the heap.
pub const STARTUP_SETTLED: std::time::Duration = std::time::Duration::from_secs(30);

/// After startup, how often [`keep_lean`] reads the allocator's figures, and how much newly freed
/// memory the arenas may hold before it goes back to the kernel.
pub const HEAP_TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
pub const HEAP_TRIM_LIMIT: u64 = 4 << 20;

/// Keeps a long-running process' memory lean until `stop` completes: [`STARTUP_SETTLED`] after
/// the start, freed heap pages go back ([`release_free_memory`]) and the code only startup ran
/// leaves the resident set ([`release_startup_code`]); from then on the heap is trimmed whenever
/// [`HEAP_TRIM_LIMIT`] of newly freed memory piled up ([`HeapTrimmer`], every
/// [`HEAP_TRIM_EVERY`]). Spawn it once per process.
pub async fn keep_lean(stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    tokio::select! {
        _ = &mut stop => return,
        _ = tokio::time::sleep(STARTUP_SETTLED) => {}
    }
    let released = tokio::task::spawn_blocking(|| {
        release_free_memory();
        release_startup_code()
    })
    .await;
    match released {
        Ok(Ok(bytes)) => tracing::debug!(bytes, "startup code paged out"),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "could not page out startup code; it stays resident")
        }
        Err(e) => tracing::warn!(error = %e, "paging out startup code panicked"),
    }
    let mut trimmer = HeapTrimmer::new(HEAP_TRIM_LIMIT);
    let mut every = tokio::time::interval(HEAP_TRIM_EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = every.tick() => {}
        }
        trimmer = match tokio::task::spawn_blocking(move || {
            trimmer.tick();
            trimmer
        })
        .await
        {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "trimming the heap panicked; not trimming again");
                return;
            }
        };
    }
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

    /// The heap tests read process-wide allocator figures: one at a time.
    static HEAP_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn heap_tests() -> std::sync::MutexGuard<'static, ()> {
        HEAP_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

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
        // every read-only mapping of the executable now reads back page by page ("rr")
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_string_lossy();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut mapping_is_exe = false;
        let mut checked = 0;
        for line in smaps.lines() {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                if mapping_is_exe {
                    assert!(flags.split_whitespace().any(|f| f == "rr"), "{line}");
                    checked += 1;
                }
            } else if line.contains(" r-") && line.ends_with(&*exe) {
                mapping_is_exe = true;
                continue;
            } else if !line.contains(':') || line.split_whitespace().count() >= 5 {
                mapping_is_exe = false;
            }
        }
        assert!(checked > 0, "no read-only mapping of {exe} in smaps");
    }

    #[test]
    fn tune_allocator_on_glibc_accepts_the_settings() {
        assert_eq!(tune_allocator(), cfg!(target_env = "gnu"));
    }

    #[test]
    fn heap_usage_after_allocating_counts_the_live_bytes() {
        let _one_at_a_time = heap_tests();
        let before = heap_usage();
        let blocks: Vec<Vec<u8>> = (0..4_000).map(|_| vec![1u8; 1000]).collect();
        let during = heap_usage();
        if cfg!(target_env = "gnu") {
            let (before, during) = (before.unwrap(), during.unwrap());
            assert!(
                during.in_use >= before.in_use + 3_000_000,
                "{before:?} -> {during:?}"
            );
        } else {
            assert_eq!((before, during), (None, None));
        }
        drop(std::hint::black_box(blocks));
    }

    #[test]
    fn heap_trimmer_decide_trims_only_on_new_freed_memory_beyond_the_limit() {
        let mut trimmer = HeapTrimmer::new(100);
        assert!(!trimmer.decide(50), "under the limit");
        assert!(trimmer.decide(150), "over the limit");
        assert!(!trimmer.decide(150), "nothing new since the trim");
        assert!(!trimmer.decide(240), "less than the limit new");
        assert!(trimmer.decide(251), "more than the limit new");
        assert!(!trimmer.decide(40), "freed chunks were reused");
        assert!(
            trimmer.decide(141),
            "new frees counted from the lower figure"
        );
    }

    #[test]
    fn heap_trimmer_tick_after_freeing_much_trims() {
        let _one_at_a_time = heap_tests();
        let mut trimmer = HeapTrimmer::new(1 << 20);
        trimmer.tick();
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|_| vec![7u8; 1000]).collect();
        // a block allocated after them keeps glibc from giving the top of the heap back by itself
        let pin = std::hint::black_box(vec![1u8; 1000]);
        drop(std::hint::black_box(blocks));
        match trimmer.tick() {
            Some((usage, trimmed)) => assert!(trimmed, "{usage:?}"),
            None => assert!(heap_usage().is_none() && cfg!(not(target_env = "gnu"))),
        }
        assert_eq!(pin[999], 1);
    }

    #[test]
    fn release_free_memory_after_freeing_many_blocks_releases_and_keeps_live_data() {
        let _one_at_a_time = heap_tests();
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
