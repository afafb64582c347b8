import Tensor

/// A tensor a layer keeps and a checkpoint carries but the optimizer never touches:
/// BatchNorm's `running_mean` and `running_var` (float32) and its `num_batches_tracked` (int64).
///
/// The bytes live in one allocation shared by every `prefixed` view, so a model's renamed
/// buffers and the layer's own are the same storage.
public final class Buffer {
    /// Element types a buffer can have; the raw values are safetensors' dtype names.
    public enum DType: String, Sendable {
        case float32 = "F32"
        case int64 = "I64"

        public var byteSize: Int { self == .float32 ? 4 : 8 }
    }

    public let name: String
    public let shape: [Int]
    public let dtype: DType
    private let storage: Storage

    /// A zero-filled buffer.
    public init(name: String, shape: [Int], dtype: DType) {
        precondition(shape.allSatisfy { $0 >= 0 }, "buffer \(name): negative dimension in \(shape)")
        self.name = name
        self.shape = shape
        self.dtype = dtype
        storage = Storage(byteCount: shape.reduce(1, *) * dtype.byteSize)
    }

    private init(name: String, sharing other: Buffer) {
        self.name = name
        shape = other.shape
        dtype = other.dtype
        storage = other.storage
    }

    public var count: Int { shape.reduce(1, *) }

    /// The raw little-endian bytes, `count × dtype.byteSize` of them.
    public var bytes: UnsafeMutableRawBufferPointer { storage.bytes }

    /// The values of a float32 buffer.
    public var floats: UnsafeMutableBufferPointer<Float> {
        precondition(dtype == .float32, "buffer \(name) is \(dtype.rawValue), not F32")
        return storage.bytes.bindMemory(to: Float.self)
    }

    /// The values of an int64 buffer.
    public var integers: UnsafeMutableBufferPointer<Int64> {
        precondition(dtype == .int64, "buffer \(name) is \(dtype.rawValue), not I64")
        return storage.bytes.bindMemory(to: Int64.self)
    }

    /// The same storage under `prefix.name`, for composing layers into models.
    public func prefixed(_ prefix: String) -> Buffer {
        Buffer(name: prefix + "." + name, sharing: self)
    }

    private final class Storage {
        private let allocation: UnsafeMutableRawBufferPointer
        let byteCount: Int

        init(byteCount: Int) {
            allocation = .allocate(byteCount: Swift.max(byteCount, 1), alignment: 8)
            allocation.initializeMemory(as: UInt8.self, repeating: 0)
            self.byteCount = byteCount
        }

        var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: allocation[0..<byteCount]) }

        deinit { allocation.deallocate() }
    }
}
