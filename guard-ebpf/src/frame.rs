//! Bounds-checked reads from the XDP frame.

use aya_ebpf::programs::XdpContext;
use guard_common::{Packet, parse::MAX_OFFSET};

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
    fn read_at<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // The explicit bound keeps the pointer's range known to the verifier.
        if offset > MAX_OFFSET {
            return None;
        }
        let at = self.start + offset;
        if at + N > self.end {
            return None;
        }
        // SAFETY: [at, at + N) lies inside the frame, checked just above.
        Some(unsafe { (at as *const [u8; N]).read_unaligned() })
    }
}
