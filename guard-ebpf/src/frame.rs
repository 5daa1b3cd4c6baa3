//! Bounds-checked reads from the XDP frame.

use aya_ebpf::programs::XdpContext;
use guard_common::{
    Packet,
    parse::{Header, MAX_OFFSET},
};

/// The frame between `data` and `data_end`.
pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    /// The frame of this XDP context.
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }
}

impl Packet for Frame {
    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline(always)]
    fn header_at<H: Header>(&self, offset: usize) -> Option<&H> {
        // The explicit bound keeps the pointer's range known to the verifier.
        if offset > MAX_OFFSET {
            return None;
        }
        let at = self.start + offset;
        if at + core::mem::size_of::<H>() > self.end {
            return None;
        }
        // SAFETY: a frame's bytes are kernel memory, never at address 0. Said so, the compiler
        // drops the null test it would otherwise make of the `Option<&H>` below.
        unsafe { core::hint::assert_unchecked(at != 0) };
        // SAFETY: [at, at + size_of::<H>()) lies inside the frame, checked just above; a
        // `Header` has alignment 1 and accepts any bytes; the frame outlives the program run.
        Some(unsafe { &*(at as *const H) })
    }
}
