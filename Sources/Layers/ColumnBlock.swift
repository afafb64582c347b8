import Tensor

/// `width` consecutive columns, from `offset`, of every row of a row-major tensor, reached in place:
/// the x and gate halves of Mamba's `in_proj` output [rows, 2 · intermediate], the Δ, B and C blocks
/// of its `x_proj` output [rows, rank + 2 · state]. Kernels step `rowStride` floats from row to row,
/// so splitting a projection's output costs no copy. Holding a block keeps the whole tensor alive.
public struct ColumnBlock {
    public let tensor: Tensor
    public let offset: Int
    public let width: Int

    /// Columns `offset ..< offset + width` of `tensor` (all of them by default).
    public init(_ tensor: Tensor, offset: Int = 0, width: Int? = nil) {
        let width = width ?? tensor.columnCount - offset
        precondition(offset >= 0 && width >= 0 && offset + width <= tensor.columnCount,
                     "columns \(offset)..<\(offset + width) of a tensor with rows of \(tensor.columnCount)")
        self.tensor = tensor
        self.offset = offset
        self.width = width
    }

    /// The block's first element (row 0, column `offset`).
    public var pointer: UnsafeMutablePointer<Float> { tensor.pointer + offset }
    /// Floats from one row to the next: the tensor's full row width.
    public var rowStride: Int { tensor.columnCount }
    public var rowCount: Int { tensor.rowCount }

    /// Copies the block into a new contiguous [rows, width] tensor (for a `Linear` that takes it as input).
    public func contiguous() -> Tensor {
        let result = Tensor(uninitialized: [rowCount, width])
        for row in 0..<rowCount {
            (result.pointer + row * width).update(from: pointer + row * rowStride, count: width)
        }
        return result
    }

    /// Overwrites the block with `source` [rows, width].
    public func assign(_ source: Tensor) {
        precondition(source.rowCount == rowCount && source.columnCount == width, "assign \(source.shape) to \(rowCount)x\(width) columns")
        for row in 0..<rowCount {
            (pointer + row * rowStride).update(from: source.pointer + row * width, count: width)
        }
    }
}
