/// glibc's `mallopt` (malloc.h is not part of the Glibc module); ints in, int out, so the C and
/// Swift calling conventions agree.
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32

/// glibc malloc tuning for large, short-lived activations (see `Tensor.init(uninitialized:)`):
/// M_MMAP_THRESHOLD (-3) to glibc's cap of 32 MiB (blocks above it are still mmapped), M_TRIM_THRESHOLD
/// (-1) to 512 MiB so freed activations stay mapped for the next micro-batch.
func tuneAllocator() {
    #if os(Linux)
    _ = glibcMallopt(-3, 32 << 20)
    _ = glibcMallopt(-1, 512 << 20)
    #endif
}
