//! mini's own pause image: a hand-assembled static ELF that installs SIGTERM/SIGINT handlers calling
//! `exit(0)` (PID 1 of a PID namespace ignores signals it has no handler for) and then waits for signals
//! forever, packed into a one-layer OCI image-layout tarball. No download, no registry.

use crate::builder::{build_image_tarball, ImageFile, ImageSpec};

/// The image name containerd's `sandbox_image` points at.
pub const PAUSE_IMAGE: &str = "mini.local/pause:3.10";

/// Base virtual address of the single PT_LOAD segment.
const BASE: u64 = 0x40_0000;
const EHDR_SIZE: u16 = 64;
const PHDR_SIZE: u16 = 56;
const PHNUM: u16 = 2;

/// x86_64 machine code (assembled with llvm-mc, Intel syntax):
/// ```text
/// _start:  sub rsp,32 ; lea rax,[rip+handler] ; mov [rsp],rax         ; struct sigaction on the stack:
///          mov qword [rsp+8],0x04000000 ; mov [rsp+16],rax ; mov qword [rsp+24],0
///                                         ; {handler, SA_RESTORER (x86_64 needs one; never used), handler, mask 0}
///          mov edi,15 ; call install ; mov edi,2 ; call install      ; SIGTERM, SIGINT
/// loop:    mov eax,34 ; syscall ; jmp loop                           ; pause()
/// install: lea rsi,[rsp+8] ; xor edx,edx ; mov r10d,8 ; mov eax,13 ; syscall ; ret   ; rt_sigaction
/// handler: xor edi,edi ; mov eax,60 ; syscall                        ; exit(0)
/// ```
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
pub(crate) const CODE_X86_64: &[u8] = &[
    0x48, 0x83, 0xec, 0x20, 0x48, 0x8d, 0x05, 0x4d, 0x00, 0x00, 0x00, 0x48, 0x89, 0x04, 0x24, 0x48,
    0xc7, 0x44, 0x24, 0x08, 0x00, 0x00, 0x00, 0x04, 0x48, 0x89, 0x44, 0x24, 0x10, 0x48, 0xc7, 0x44,
    0x24, 0x18, 0x00, 0x00, 0x00, 0x00, 0xbf, 0x0f, 0x00, 0x00, 0x00, 0xe8, 0x13, 0x00, 0x00, 0x00,
    0xbf, 0x02, 0x00, 0x00, 0x00, 0xe8, 0x09, 0x00, 0x00, 0x00, 0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f,
    0x05, 0xeb, 0xf7, 0x48, 0x8d, 0x74, 0x24, 0x08, 0x31, 0xd2, 0x41, 0xba, 0x08, 0x00, 0x00, 0x00,
    0xb8, 0x0d, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xc3, 0x31, 0xff, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f,
    0x05,
];

/// aarch64 machine code (assembled with llvm-mc; arm64 has no pause(2), so it loops on
/// `ppoll(NULL, 0, NULL, NULL)`, which likewise sleeps until a signal):
/// ```text
/// _start:  sub sp,sp,#32 ; adr x9,handler ; stp x9,xzr,[sp] ; stp xzr,xzr,[sp,#16]
///          mov x0,#15 ; bl install ; mov x0,#2 ; bl install
/// loop:    mov x0..x3,#0 ; mov x4,#8 ; mov x8,#73 ; svc #0 ; b loop   ; ppoll
/// install: mov x1,sp ; mov x2,#0 ; mov x3,#8 ; mov x8,#134 ; svc #0 ; ret   ; rt_sigaction
/// handler: mov x0,#0 ; mov x8,#93 ; svc #0                              ; exit(0)
/// ```
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) const CODE_AARCH64: &[u8] = &[
    0xff, 0x83, 0x00, 0xd1, 0xa9, 0x02, 0x00, 0x10, 0xe9, 0x7f, 0x00, 0xa9, 0xff, 0x7f, 0x01, 0xa9,
    0xe0, 0x01, 0x80, 0xd2, 0x0b, 0x00, 0x00, 0x94, 0x40, 0x00, 0x80, 0xd2, 0x09, 0x00, 0x00, 0x94,
    0x00, 0x00, 0x80, 0xd2, 0x01, 0x00, 0x80, 0xd2, 0x02, 0x00, 0x80, 0xd2, 0x03, 0x00, 0x80, 0xd2,
    0x04, 0x01, 0x80, 0xd2, 0x28, 0x09, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4, 0xf9, 0xff, 0xff, 0x17,
    0xe1, 0x03, 0x00, 0x91, 0x02, 0x00, 0x80, 0xd2, 0x03, 0x01, 0x80, 0xd2, 0xc8, 0x10, 0x80, 0xd2,
    0x01, 0x00, 0x00, 0xd4, 0xc0, 0x03, 0x5f, 0xd6, 0x00, 0x00, 0x80, 0xd2, 0xa8, 0x0b, 0x80, 0xd2,
    0x01, 0x00, 0x00, 0xd4,
];

/// ELF `e_machine` values.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
pub(crate) const EM_X86_64: u16 = 62;
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(crate) const EM_AARCH64: u16 = 183;

/// Wraps position-independent machine code into a minimal static ELF64 executable: the ELF header, a
/// PT_LOAD (R+X) mapping the whole file at [`BASE`] and a PT_GNU_STACK (RW, non-executable stack).
pub(crate) fn static_elf(machine: u16, code: &[u8]) -> Vec<u8> {
    let code_offset = u64::from(EHDR_SIZE + PHDR_SIZE * PHNUM);
    let file_size = code_offset + code.len() as u64;
    let mut e = Vec::with_capacity(file_size as usize);
    // e_ident: magic, ELFCLASS64, little endian, version 1, System V ABI, padding.
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    e.extend_from_slice(&2u16.to_le_bytes()); // e_type = ET_EXEC
    e.extend_from_slice(&machine.to_le_bytes());
    e.extend_from_slice(&1u32.to_le_bytes()); // e_version
    e.extend_from_slice(&(BASE + code_offset).to_le_bytes()); // e_entry
    e.extend_from_slice(&u64::from(EHDR_SIZE).to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    e.extend_from_slice(&EHDR_SIZE.to_le_bytes());
    e.extend_from_slice(&PHDR_SIZE.to_le_bytes());
    e.extend_from_slice(&PHNUM.to_le_bytes());
    e.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    e.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    e.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
                                              // PT_LOAD, flags R|X.
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&5u32.to_le_bytes());
    e.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    e.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    e.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    e.extend_from_slice(&file_size.to_le_bytes()); // p_filesz
    e.extend_from_slice(&file_size.to_le_bytes()); // p_memsz
    e.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
                                                   // PT_GNU_STACK, flags R|W.
    e.extend_from_slice(&0x6474_e551u32.to_le_bytes());
    e.extend_from_slice(&6u32.to_le_bytes());
    e.extend_from_slice(&[0u8; 40]);
    e.extend_from_slice(&16u64.to_le_bytes());
    e.extend_from_slice(code);
    e
}

/// The pause binary for the host architecture.
pub fn pause_binary() -> Vec<u8> {
    #[cfg(target_arch = "aarch64")]
    {
        static_elf(EM_AARCH64, CODE_AARCH64)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        static_elf(EM_X86_64, CODE_X86_64)
    }
}

/// The pause image's spec: `/pause` and nothing else.
pub fn pause_image_spec() -> ImageSpec {
    ImageSpec {
        name: PAUSE_IMAGE.to_string(),
        files: vec![ImageFile {
            path: "/pause".into(),
            mode: 0o755,
            contents: pause_binary(),
        }],
        entrypoint: vec!["/pause".into()],
        ..Default::default()
    }
}

/// An OCI image-layout tarball holding mini's own pause image for the host's platform: one layer with
/// `/pause`, config Entrypoint `["/pause"]`, named [`PAUSE_IMAGE`]. Deterministic bytes.
pub fn pause_image_tarball() -> Vec<u8> {
    // The spec is fixed and valid: the builder can only fail on invalid paths/names, which it has none of.
    build_image_tarball(&pause_image_spec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the fields of an ELF64 header and program headers a loader cares about.
    struct ParsedElf {
        machine: u16,
        entry: u64,
        loads: Vec<(u64, u64, u64, u32)>,
    }

    fn parse_elf(b: &[u8]) -> Result<ParsedElf, String> {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        if b.len() < 64 || &b[..4] != b"\x7fELF" {
            return Err("no ELF magic".into());
        }
        if b[4] != 2 || b[5] != 1 {
            return Err("not ELF64 little endian".into());
        }
        if u16_at(16) != 2 {
            return Err("not ET_EXEC".into());
        }
        let (phoff, phentsize, phnum) = (
            u64_at(32) as usize,
            u16_at(54) as usize,
            u16_at(56) as usize,
        );
        if phentsize != 56 || phoff + phentsize * phnum > b.len() {
            return Err("program headers out of range".into());
        }
        let mut loads = Vec::new();
        for i in 0..phnum {
            let p = phoff + i * phentsize;
            if u32_at(p) == 1 {
                loads.push((u64_at(p + 8), u64_at(p + 16), u64_at(p + 32), u32_at(p + 4)));
            }
        }
        Ok(ParsedElf {
            machine: u16_at(18),
            entry: u64_at(24),
            loads,
        })
    }

    fn check_elf(bin: &[u8], machine: u16) {
        let elf = parse_elf(bin).unwrap();
        assert_eq!(elf.machine, machine);
        assert_eq!(elf.loads.len(), 1);
        let (offset, vaddr, filesz, flags) = elf.loads[0];
        assert_eq!(offset, 0);
        assert_eq!(filesz, bin.len() as u64);
        assert_eq!(flags & 1, 1, "segment must be executable");
        assert!(
            elf.entry >= vaddr && elf.entry < vaddr + filesz,
            "entry inside the loaded segment"
        );
    }

    #[test]
    fn pause_elf_x86_64_parses_with_right_machine() {
        check_elf(&static_elf(EM_X86_64, CODE_X86_64), EM_X86_64);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(pause_binary(), static_elf(EM_X86_64, CODE_X86_64));
    }

    #[test]
    fn pause_elf_aarch64_parses_with_right_machine() {
        check_elf(
            &static_elf(EM_AARCH64, &[0xc0, 0x03, 0x5f, 0xd6]),
            EM_AARCH64,
        );
        #[cfg(target_arch = "aarch64")]
        check_elf(&pause_binary(), EM_AARCH64);
    }

    #[test]
    fn pause_image_tarball_is_named_and_has_pause_entrypoint() {
        use crate::archive::{open_bytes, TarIndex};
        use crate::layout::{plan, BlobData};
        let bytes = pause_image_tarball();
        assert!(!bytes.is_empty());
        let p =
            plan(TarIndex::build(open_bytes(&bytes, "pause").unwrap(), "pause").unwrap()).unwrap();
        assert_eq!(p.images[0].names, vec![PAUSE_IMAGE.to_string()]);
        let BlobData::Inline(config) = &p.images[0].config.data else {
            panic!("inline config")
        };
        let config: serde_json::Value = serde_json::from_slice(config).unwrap();
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/pause"])
        );
    }

    #[cfg(target_arch = "x86_64")]
    fn spawn_pause() -> (tempfile::TempDir, std::process::Child) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pause");
        std::fs::write(&path, pause_binary()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // another test thread may fork while this file is still open for writing: the child
        // holds the descriptor until it execs, and exec here fails with ETXTBSY meanwhile
        for _ in 0..50 {
            match std::process::Command::new(&path).spawn() {
                Ok(child) => return (dir, child),
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("spawning the pause binary: {e}"),
            }
        }
        panic!("the pause binary stayed busy (ETXTBSY) for a second")
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn pause_binary_x86_64_runs_until_sigkill() {
        use std::os::unix::process::ExitStatusExt;
        let (_dir, mut child) = spawn_pause();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "pause exited on its own"
        );
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn pause_binary_x86_64_exits_zero_on_sigterm() {
        let (_dir, mut child) = spawn_pause();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "pause exited on its own"
        );
        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = child.wait().unwrap();
        assert_eq!(exit.code(), Some(0), "{exit:?}");
    }
}
