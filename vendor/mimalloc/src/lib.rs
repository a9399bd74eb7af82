// Copyright 2019 Octavian Oncescu

#![no_std]

//! A drop-in global allocator wrapper around the [mimalloc](https://github.com/microsoft/mimalloc) allocator.
//! Mimalloc is a general purpose, performance oriented allocator built by Microsoft.
//!
//! ## Usage
//! ```rust,ignore
//! use mimalloc::MiMalloc;
//!
//! #[global_allocator]
//! static GLOBAL: MiMalloc = MiMalloc;
//! ```
//!
//! ## Usage with secure mode
//! Using secure mode adds guard pages,
//! randomized allocation, encrypted free lists, etc. The performance penalty is usually
//! around 10% according to [mimalloc's](https://github.com/microsoft/mimalloc)
//! own benchmarks.
//!
//! To enable secure mode, put in `Cargo.toml`:
//! ```toml
//! [dependencies]
//! mimalloc = { version = "*", features = ["secure"] }
//! ```

extern crate libmimalloc_sys as ffi;

#[cfg(feature = "extended")]
mod extended;

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use ffi::*;

/// Drop-in mimalloc global allocator.
///
/// ## Usage
/// ```rust,ignore
/// use mimalloc::MiMalloc;
///
/// #[global_allocator]
/// static GLOBAL: MiMalloc = MiMalloc;
/// ```
pub struct MiMalloc;

/// Patch (linkpush, PATCHES.md 1): whether `mi_malloc` and friends already give `size` bytes
/// aligned to `align`, so the `_aligned` functions are not needed. mimalloc's size classes are
/// multiples of 8, and of 16 from 16 bytes on, and a page's first block is 16-aligned: a block
/// of `size` bytes is aligned to any `align` up to 16 that divides `size`. Padding (the `secure`
/// and debug builds) moves blocks off those boundaries, so they keep the `_aligned` functions.
#[inline(always)]
fn natural(size: usize, align: usize) -> bool {
    const MI_MAX_ALIGN_SIZE: usize = 16;
    cfg!(not(any(feature = "secure", feature = "debug", feature = "debug_in_debug")))
        && align <= MI_MAX_ALIGN_SIZE
        && size >= align
        && size % align == 0
}

unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Patch (linkpush): the plain function when it suffices. mimalloc v3's aligned path
        // takes its fast route only for small blocks whose size class is a power of two; any
        // other (a 48-byte or a 3-KB block) went to `mi_theap_malloc_zero_aligned_at_generic`,
        // which over-allocates by `align - 1` and aligns inside the larger block.
        let p = if natural(layout.size(), layout.align()) {
            mi_malloc(layout.size())
        } else {
            mi_malloc_aligned(layout.size(), layout.align())
        } as *mut u8;
        debug_assert!(p as usize % layout.align() == 0);
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = if natural(layout.size(), layout.align()) {
            mi_zalloc(layout.size())
        } else {
            mi_zalloc_aligned(layout.size(), layout.align())
        } as *mut u8;
        debug_assert!(p as usize % layout.align() == 0);
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The new size decides: the block may move to another size class.
        let p = if natural(new_size, layout.align()) {
            mi_realloc(ptr as *mut c_void, new_size)
        } else {
            mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align())
        } as *mut u8;
        debug_assert!(p as usize % layout.align() == 0);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        fn mi_usable_size(p: *const c_void) -> usize;
    }

    /// Patch (linkpush, PATCHES.md 1): a block whose size class is no power of two takes the
    /// plain path, and so gets a block of its own size class, not an over-allocated one (on the
    /// unpatched crate, 48 bytes aligned to 8 got a 64-byte block).
    #[test]
    fn a_naturally_aligned_request_gets_a_block_of_its_size_class() {
        unsafe {
            for size in [24usize, 48, 80, 3048] {
                let layout = Layout::from_size_align(size, 8).unwrap();
                let p = MiMalloc.alloc(layout);
                let plain = mi_malloc(size);
                let expected = mi_usable_size(plain as *const c_void);
                assert_eq!(mi_usable_size(p as *const c_void), expected, "size {size}");
                MiMalloc.dealloc(p, layout);
                mi_free(plain);
            }
        }
    }

    #[test]
    fn every_block_has_the_alignment_asked_for() {
        unsafe {
            for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
                for size in (1..=300).chain([1000, 1024, 3048, 5000, 70_000]) {
                    let layout = Layout::from_size_align(size, align).unwrap();
                    let p = MiMalloc.alloc(layout);
                    assert_eq!(p as usize % align, 0, "alloc {size} / {align}");
                    let z = MiMalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "alloc_zeroed {size} / {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    let r = MiMalloc.realloc(p, layout, size * 3 + 5);
                    assert_eq!(r as usize % align, 0, "realloc {size} / {align}");
                    MiMalloc.dealloc(r, Layout::from_size_align(size * 3 + 5, align).unwrap());
                    MiMalloc.dealloc(z, layout);
                }
            }
        }
    }

    #[test]
    fn it_frees_allocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_allocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_zero_allocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc_zeroed(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_zero_allocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc_zeroed(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_reallocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            let ptr = alloc.realloc(ptr, layout, 16);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_reallocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            let ptr = alloc.realloc(ptr, layout, 2 << 20);
            alloc.dealloc(ptr, layout);
        }
    }
}
