/// A dense, row-major Float32 tensor with reference semantics.
///
/// Storage is one contiguous allocation charged to the `MemoryMeter` current
/// when it was made; views (`reshaped`, `rows`) share it and keep it alive.
/// Kernels work on `pointer` directly: no copy-on-write, no hidden copies.
public final class Tensor: @unchecked Sendable {
    /// Row-major shape; the last dimension is contiguous.
    public let shape: [Int]
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>
    /// The tensor that owns `pointer` when this one is a view.
    private let base: Tensor?
    private let meter: MemoryMeter?

    /// A zero-filled tensor charged to `MemoryMeter.current`.
    public init(zeros shape: [Int]) {
        (self.shape, count, pointer, meter) = Tensor.allocateStorage(shape)
        base = nil
        pointer.initialize(repeating: 0, count: Swift.max(count, 1))
    }

    /// A tensor whose contents are unspecified (whatever the allocator hands back), charged to
    /// `MemoryMeter.current`. Only for buffers the next operation provably overwrites in full
    /// (a GEMM with beta 0, an element-wise kernel writing every element): skipping the zero-fill
    /// saves a pass over memory, which for the large activations is most of their cost.
    public init(uninitialized shape: [Int]) {
        (self.shape, count, pointer, meter) = Tensor.allocateStorage(shape)
        base = nil
    }

    private static func allocateStorage(_ shape: [Int]) -> ([Int], Int, UnsafeMutablePointer<Float>, MemoryMeter) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        _ = Tensor.allocatorTuned
        let count = shape.reduce(1, *)
        let pointer = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(count, 1))
        let meter = MemoryMeter.current
        meter.charge(count * MemoryLayout<Float>.stride)
        return (shape, count, pointer, meter)
    }

    /// Done once, before the first tensor: glibc serves blocks above its mmap threshold (128 KiB,
    /// growing dynamically) with fresh mmaps, so every large activation paid page faults and
    /// kernel zeroing on each allocation and munmap on each free. Raising the threshold to its
    /// maximum and the trim threshold with it keeps freed activations in the heap for reuse.
    private static let allocatorTuned: Void = tuneAllocator()

    public convenience init(shape: [Int], values: [Float]) {
        self.init(zeros: shape)
        precondition(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: count) }
    }

    private init(viewOf base: Tensor, offset: Int, shape: [Int]) {
        self.shape = shape
        count = shape.reduce(1, *)
        pointer = base.pointer + offset
        self.base = base.base ?? base
        meter = nil
    }

    deinit {
        guard base == nil else { return }
        pointer.deallocate()
        meter?.release(count * MemoryLayout<Float>.stride)
    }

    /// Bytes this tensor's own storage occupies (zero for views).
    public var allocatedBytes: Int { base == nil ? count * MemoryLayout<Float>.stride : 0 }

    /// Product of all dimensions but the last: the number of rows of the 2-D view.
    public var rowCount: Int { shape.count <= 1 ? 1 : shape.dropLast().reduce(1, *) }
    /// The last dimension: the length of one row.
    public var columnCount: Int { shape.last ?? 1 }

    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: pointer, count: count) }

    public subscript(index: Int) -> Float {
        get { pointer[index] }
        set { pointer[index] = newValue }
    }

    public func toArray() -> [Float] { Array(buffer) }

    /// The same storage seen with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(viewOf: self, offset: 0, shape: newShape)
    }

    /// Rows `range` of the leading dimension, sharing storage.
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(!shape.isEmpty && range.lowerBound >= 0 && range.upperBound <= shape[0])
        let rowSize = count / Swift.max(shape[0], 1)
        return Tensor(viewOf: self, offset: range.lowerBound * rowSize, shape: [range.count] + shape.dropFirst())
    }

    /// A fresh tensor with the same shape and values.
    public func copy() -> Tensor {
        let result = Tensor(uninitialized: shape)
        result.pointer.update(from: pointer, count: count)
        return result
    }

    public func zero() {
        pointer.update(repeating: 0, count: count)
    }

    /// `self += other`, element by element.
    public func add(_ other: Tensor) {
        precondition(other.count == count, "add: \(other.shape) to \(shape)")
        let (target, source) = (pointer, other.pointer)
        for i in 0..<count { target[i] += source[i] }
    }
}
