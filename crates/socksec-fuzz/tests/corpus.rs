//! Replays every committed corpus file and every past crash of every fuzz target on stable
//! (`fuzz/corpus/NAME/`, `fuzz/regressions/NAME/`), and holds each run to an allocation bound:
//! no length field may make a decoder allocate far more than the bytes it was given.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

/// Counts the largest single allocation of the calling thread since the last reset (other
/// tests and the harness allocate on their own threads).
struct Largest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: a thread's last allocations may come after its locals are gone.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: defers to the system allocator; only records the requested size.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// The bound: 64 KiB of fixed buffers (receive buffers, formatting) plus 64 bytes per input
/// byte (a decoded value, its Debug text and JSON are each a small multiple of the input).
fn allowed(input: usize) -> usize {
    64 * 1024 + 64 * input
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn every_corpus_file_and_past_crash_passes_its_target() {
    let mut report = Vec::new();
    for (name, target) in socksec_fuzz::TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        let crashes = files(&fuzz_dir().join("regressions").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz target {name} has no committed corpus in fuzz/corpus/{name}"
        );
        for path in corpus.iter().chain(&crashes) {
            let data = std::fs::read(path).unwrap();
            // The C ABI target's descriptors are made on its first call: not this input's.
            target(&[]);
            LARGEST.set(0);
            target(&data);
            let largest = LARGEST.get();
            assert!(
                largest <= allowed(data.len()),
                "{name}: {} ({} bytes) made an allocation of {largest} bytes",
                path.display(),
                data.len()
            );
        }
        report.push(format!(
            "{name}: {} inputs, {} past crashes",
            corpus.len(),
            crashes.len()
        ));
    }
    eprintln!("{}", report.join("\n"));
}

/// The planted-key check itself finds a key wherever it shows (a check that cannot fail is
/// no check).
#[test]
fn the_key_check_finds_a_key_in_every_form() {
    use socksec_fuzz::{KEY, assert_no_key};
    let forms = [
        String::from_utf8_lossy(KEY).into_owned(),
        format!("{:?}", KEY.to_vec()),
        serde_json::to_string(&KEY.to_vec()).unwrap(),
        KEY.iter().map(|b| format!("{b:02X}")).collect(),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, KEY),
    ];
    for form in forms {
        let caught = std::panic::catch_unwind(|| assert_no_key("test", &form));
        assert!(caught.is_err(), "the key went unnoticed in {form}");
    }
    assert_no_key("test", "no key here: rfc4106(gcm(aes)) 128");
}
