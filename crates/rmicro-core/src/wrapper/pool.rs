//! Where the futures of function wrappers live, and the call they pass down: blocks
//! reused from a per-thread pool instead of a fresh heap allocation per wrapper per
//! call.
//!
//! Every function wrapper on a call has a future of a type only known where the
//! wrapper was made, so it must sit behind a pointer. A `Box` per wrapper per call
//! is what that costs with the global allocator, and under many calls in flight
//! glibc's `malloc` serves those boxes from its slow paths (its per-thread cache
//! holds 7 blocks of a size): about 400 instructions a wrapper, measured with
//! callgrind. A [`PooledFuture`] takes a block of 64, 128 or 256 bytes from the
//! dropping-and-creating thread's own free list (a few dozen instructions) and gives
//! it back when the future is dropped; a larger future is boxed as before.
//!
//! Safety rests on three rules kept in this file only: a block is written once with
//! a future of the type its vtable was made for; the future is polled only in place
//! (it never moves, so pinning holds); it is dropped exactly once, in
//! [`PooledFuture`]'s `Drop`, before its block is reused or freed.

use std::alloc::Layout;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Block sizes of the pool's classes, in bytes.
const CLASSES: [usize; 3] = [64, 128, 256];
/// Alignment of every block (enough for any future of ordinary types).
const ALIGN: usize = 16;
/// Free blocks a thread keeps per class; more are returned to the allocator.
const KEEP: usize = 1024;

/// The free blocks of one thread, by class.
struct FreeLists([Vec<NonNull<u8>>; 3]);

impl Drop for FreeLists {
    fn drop(&mut self) {
        for (class, blocks) in self.0.iter_mut().enumerate() {
            for block in blocks.drain(..) {
                // SAFETY: every block in the lists was allocated with this layout.
                unsafe { std::alloc::dealloc(block.as_ptr(), layout(class)) };
            }
        }
    }
}

thread_local! {
    static FREE: RefCell<FreeLists> = const {
        RefCell::new(FreeLists([Vec::new(), Vec::new(), Vec::new()]))
    };
}

/// The blocks' layouts, by class.
const LAYOUTS: [Layout; 3] = {
    let mut layouts = [Layout::new::<u8>(); 3];
    let mut class = 0;
    while class < 3 {
        // Checked when compiling: the sizes are non-zero multiples of the alignment,
        // a power of two.
        layouts[class] = match Layout::from_size_align(CLASSES[class], ALIGN) {
            Ok(layout) => layout,
            Err(_) => panic!("a pool class's layout is invalid"),
        };
        class += 1;
    }
    layouts
};

fn layout(class: usize) -> Layout {
    LAYOUTS[class]
}

/// A block of `class`: a reused one, or a new one (`None` if the allocator failed).
fn take(class: usize) -> Option<NonNull<u8>> {
    let reused = FREE
        .try_with(|free| free.try_borrow_mut().ok()?.0[class].pop())
        .ok()
        .flatten();
    reused.or_else(|| {
        // SAFETY: the layout's size is not zero.
        NonNull::new(unsafe { std::alloc::alloc(layout(class)) })
    })
}

/// Gives `block` of `class` back to this thread's list, or to the allocator.
fn give(class: usize, block: NonNull<u8>) {
    let kept = FREE
        .try_with(|free| match free.try_borrow_mut() {
            Ok(mut free) if free.0[class].len() < KEEP => {
                free.0[class].push(block);
                true
            }
            _ => false,
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: the block was allocated with this class's layout.
        unsafe { std::alloc::dealloc(block.as_ptr(), layout(class)) };
    }
}

/// How to poll and drop the future in a block, for one future type.
struct VTable<T> {
    poll: unsafe fn(NonNull<u8>, &mut Context<'_>) -> Poll<T>,
    drop: unsafe fn(NonNull<u8>),
}

struct Ops<F>(std::marker::PhantomData<F>);

impl<F: Future> Ops<F> {
    const VTABLE: VTable<F::Output> = VTable {
        poll: Self::poll,
        drop: Self::drop,
    };

    /// SAFETY: `block` holds a live `F` that is never moved.
    unsafe fn poll(block: NonNull<u8>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: by the caller's promise, pinning holds.
        let future = unsafe { Pin::new_unchecked(&mut *block.as_ptr().cast::<F>()) };
        future.poll(cx)
    }

    /// SAFETY: `block` holds a live `F`, dropped here once.
    unsafe fn drop(block: NonNull<u8>) {
        // SAFETY: by the caller's promise.
        unsafe { std::ptr::drop_in_place(block.as_ptr().cast::<F>()) };
    }
}

/// A future in a pooled block, or boxed when it does not fit one.
pub(crate) struct PooledFuture<T: 'static> {
    inner: Inner<T>,
}

enum Inner<T: 'static> {
    Pooled {
        block: NonNull<u8>,
        class: usize,
        vtable: &'static VTable<T>,
    },
    Boxed(Pin<Box<dyn Future<Output = T> + Send>>),
}

// SAFETY: a pooled block holds a future that was `Send` when it was put there
// (`new` requires it), and nothing else refers to the block.
unsafe impl<T: 'static> Send for PooledFuture<T> {}

impl<T: 'static> PooledFuture<T> {
    /// Puts `future` in a block of the smallest class it fits, or in a box.
    pub(crate) fn new<F>(future: F) -> Self
    where
        F: Future<Output = T> + Send + 'static,
    {
        let size = std::mem::size_of::<F>();
        let fits = std::mem::align_of::<F>() <= ALIGN;
        let class = CLASSES.iter().position(|&bytes| size <= bytes);
        if let (true, Some(class)) = (fits, class)
            && let Some(block) = take(class)
        {
            // SAFETY: the block is at least `size` bytes and aligned for `F`; it
            // was free, so nothing else reads or writes it.
            unsafe { block.as_ptr().cast::<F>().write(future) };
            return PooledFuture {
                inner: Inner::Pooled {
                    block,
                    class,
                    vtable: &Ops::<F>::VTABLE,
                },
            };
        }
        PooledFuture {
            inner: Inner::Boxed(Box::pin(future)),
        }
    }
}

impl<T: 'static> Future for PooledFuture<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().inner {
            // SAFETY: the block holds the live future `vtable` was made for, and
            // it never moves (only the pointer to it does).
            Inner::Pooled { block, vtable, .. } => unsafe { (vtable.poll)(*block, cx) },
            Inner::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T: 'static> Drop for PooledFuture<T> {
    fn drop(&mut self) {
        if let Inner::Pooled {
            block,
            class,
            vtable,
        } = self.inner
        {
            // SAFETY: the future is live (dropped only here, once); afterwards the
            // block is free again.
            unsafe { (vtable.drop)(block) };
            give(class, block);
        }
    }
}

// A pooled future never moves its contents: moving the handle is fine.
impl<T: 'static> Unpin for PooledFuture<T> {}

/// The class a value of `size` bytes aligned to `align` fits, if any.
const fn class_of(size: usize, align: usize) -> Option<usize> {
    if align > ALIGN {
        return None;
    }
    let mut class = 0;
    while class < CLASSES.len() {
        if size <= CLASSES[class] {
            return Some(class);
        }
        class += 1;
    }
    None
}

/// A value on the heap, in a block of the per-thread pool when it fits one (a
/// `Box` otherwise): one pointer to move where the value itself is hundreds of
/// bytes. A function wrapper's call travels down its chain in one, so passing it
/// to the next wrapper moves eight bytes, not the whole request.
pub(crate) struct PooledBox<T: 'static> {
    ptr: NonNull<T>,
    _owns: std::marker::PhantomData<T>,
}

// SAFETY: a `PooledBox<T>` owns its `T` as a `Box<T>` does.
unsafe impl<T: Send + 'static> Send for PooledBox<T> {}
// SAFETY: shared access gives `&T` only.
unsafe impl<T: Sync + 'static> Sync for PooledBox<T> {}

impl<T: 'static> PooledBox<T> {
    /// The pool class of `T`, or `None` when `T` is boxed.
    const CLASS: Option<usize> = class_of(std::mem::size_of::<T>(), std::mem::align_of::<T>());

    /// Moves `value` into a pooled block (or a box).
    pub(crate) fn new(value: T) -> Self {
        let ptr = match Self::CLASS {
            Some(class) => {
                let block =
                    take(class).unwrap_or_else(|| std::alloc::handle_alloc_error(layout(class)));
                let ptr = block.cast::<T>();
                // SAFETY: the block is free, large enough and aligned for `T`.
                unsafe { ptr.as_ptr().write(value) };
                ptr
            }
            None => NonNull::from(Box::leak(Box::new(value))),
        };
        PooledBox {
            ptr,
            _owns: std::marker::PhantomData,
        }
    }

    /// Moves the value out, freeing its block.
    pub(crate) fn into_inner(self) -> T {
        let this = std::mem::ManuallyDrop::new(self);
        match Self::CLASS {
            Some(class) => {
                // SAFETY: the value is live and read once; `this` is never dropped,
                // so the block is freed here only, after the read.
                let value = unsafe { this.ptr.as_ptr().read() };
                give(class, this.ptr.cast());
                value
            }
            // SAFETY: the pointer came from `Box::leak` and is owned by `this`.
            None => *unsafe { Box::from_raw(this.ptr.as_ptr()) },
        }
    }
}

impl<T: 'static> Drop for PooledBox<T> {
    fn drop(&mut self) {
        match Self::CLASS {
            Some(class) => {
                // SAFETY: the value is live and dropped once, then its block freed.
                unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
                give(class, self.ptr.cast());
            }
            // SAFETY: the pointer came from `Box::leak` and is owned by `self`.
            None => drop(unsafe { Box::from_raw(self.ptr.as_ptr()) }),
        }
    }
}

impl<T: 'static> std::ops::Deref for PooledBox<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the value is live while `self` is.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: 'static> std::ops::DerefMut for PooledBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the value is live and `self` is borrowed mutably.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: std::fmt::Debug + 'static> std::fmt::Debug for PooledBox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops; holds `N` bytes, each written with the byte it was made with.
    struct Probe<const N: usize> {
        drops: Arc<AtomicUsize>,
        bytes: [u8; N],
    }

    impl<const N: usize> Drop for Probe<N> {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn probe<const N: usize>(
        drops: &Arc<AtomicUsize>,
        value: u32,
    ) -> impl Future<Output = u32> + Send + use<N> {
        let probe = probe_value::<N>(drops, 7);
        async move {
            tokio::task::yield_now().await;
            let _held = &probe;
            value
        }
    }

    #[tokio::test]
    async fn futures_of_every_size_run_and_drop_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        assert_eq!(PooledFuture::new(probe::<8>(&drops, 1)).await, 1);
        assert_eq!(PooledFuture::new(probe::<100>(&drops, 2)).await, 2);
        assert_eq!(PooledFuture::new(probe::<200>(&drops, 3)).await, 3);
        // Too big for any class: boxed, same behaviour.
        assert_eq!(PooledFuture::new(probe::<1000>(&drops, 4)).await, 4);
        assert_eq!(drops.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_future_dropped_unfinished_is_dropped_and_its_block_reused() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut started = PooledFuture::new(probe::<8>(&drops, 1));
        let waker = futures_util::task::noop_waker();
        assert!(
            Pin::new(&mut started)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        let first = match &started.inner {
            Inner::Pooled { block, .. } => *block,
            Inner::Boxed(_) => panic!("an 8-byte future was boxed"),
        };
        drop(started);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let again = PooledFuture::new(probe::<8>(&drops, 2));
        match &again.inner {
            Inner::Pooled { block, .. } => assert_eq!(*block, first, "the block was not reused"),
            Inner::Boxed(_) => panic!("boxed"),
        }
        assert_eq!(again.await, 2);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn futures_made_on_one_thread_and_dropped_on_another() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..2000u32 {
            let future = PooledFuture::new(probe::<48>(&drops, i));
            tasks.push(tokio::spawn(future));
        }
        let mut sum = 0u64;
        for task in tasks {
            sum += u64::from(task.await.expect("task"));
        }
        assert_eq!(sum, (0..2000u64).sum::<u64>());
        assert_eq!(drops.load(Ordering::SeqCst), 2000);
    }

    fn probe_value<const N: usize>(drops: &Arc<AtomicUsize>, byte: u8) -> Probe<N> {
        Probe {
            drops: drops.clone(),
            bytes: [byte; N],
        }
    }

    #[test]
    fn boxed_values_of_every_size_keep_their_bytes_and_drop_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        // In a block of each class, and too big for any (a plain box).
        let mut small = PooledBox::new(probe_value::<8>(&drops, 1));
        let large = PooledBox::new(probe_value::<200>(&drops, 2));
        let huge = PooledBox::new(probe_value::<1000>(&drops, 3));
        assert_eq!(PooledBox::<Probe<8>>::CLASS, Some(0));
        assert_eq!(PooledBox::<Probe<200>>::CLASS, Some(2));
        assert_eq!(PooledBox::<Probe<1000>>::CLASS, None);
        small.bytes[3] = 9;
        assert_eq!(small.bytes, [1, 1, 1, 9, 1, 1, 1, 1]);
        assert!(large.bytes.iter().all(|&b| b == 2));
        // Taken out: dropped once, by the caller, not by the box.
        let out = huge.into_inner();
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        assert!(out.bytes.iter().all(|&b| b == 3));
        drop(out);
        let out = large.into_inner();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop((out, small));
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        // A zero-sized value needs no bytes and still drops once.
        let unit = PooledBox::new(());
        assert_eq!(*unit, ());
        drop(unit);
    }

    #[test]
    fn a_freed_box_gives_its_block_to_the_next_one() {
        let drops = Arc::new(AtomicUsize::new(0));
        let first = PooledBox::new(probe_value::<100>(&drops, 1));
        let block = first.ptr.cast::<u8>();
        drop(first);
        let second = PooledBox::new(probe_value::<100>(&drops, 2));
        assert_eq!(second.ptr.cast::<u8>(), block, "the block was not reused");
        assert_eq!(second.into_inner().bytes[99], 2);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn boxes_made_on_one_thread_are_dropped_on_another() {
        let drops = Arc::new(AtomicUsize::new(0));
        let boxes: Vec<_> = (0..500u32)
            .map(|i| PooledBox::new((probe_value::<48>(&drops, 5), i)))
            .collect();
        let sum = std::thread::spawn(move || {
            boxes
                .into_iter()
                .map(|b| u64::from(b.into_inner().1))
                .sum::<u64>()
        })
        .join()
        .expect("the other thread");
        assert_eq!(sum, (0..500u64).sum::<u64>());
        assert_eq!(drops.load(Ordering::SeqCst), 500);
    }
}
