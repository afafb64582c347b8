import Tensor

/// 2-D convolution, PyTorch `nn.Conv2d` with groups 1 and dilation 1, on channels-last images:
/// x [batch, height, width, inputChannels] → y [batch, outHeight, outWidth, outputChannels] with
///
///     y[b, i, j, o] = Σ_{kh, kw, c} x[b, i·s − p + kh, j·s − p + kw, c] · weight[o, c, kh, kw]  (+ bias[o])
///
/// (zero outside the image), outHeight = ⌊(height + 2p − k) / s⌋ + 1, likewise the width.
///
/// Every output pixel is a row, so the convolution is a GEMM over the micro-batch's pixels:
/// y [M, O] = cols [M, K] · Wₚᵀ with M = batch · outHeight · outWidth and K = k · k · C. Row m of
/// `cols` (im2col) is pixel m's receptive field in (kh, kw, c) order: in channels-last memory each
/// kernel row kh reads one contiguous run of up to k · C floats, so im2col is a few block copies per
/// pixel. cols is built block by block (`blockFloats`), each block consumed by its GEMM at
/// once. Wₚ [O, K] is `weight` [O, C, k, k] (torchvision's layout, what checkpoints store) repacked to
/// (kh, kw, c) order on each call, a weight-sized copy. A 1×1 stride-1 unpadded convolution is a
/// plain GEMM on x itself: no im2col and no repack.
///
/// p1, the transposed convolution: dcols = dy [M, O] · Wₚ block by block, and col2im adds each row
/// back onto the input pixels it was read from. p2: dWₚ [O, K] = dyᵀ · cols with cols recomputed from
/// the stashed x (k² times smaller to keep than cols), folded back into `weight`'s layout; db = Σ dy.
/// Under `.allPending` the pixels of all stashed micro-batches are stacked and walked in the same
/// blocks, which span micro-batch boundaries: a few large GEMMs rather than a small one per
/// micro-batch, and no memory beyond the stash and one block.
///
/// Why channels-last (measured in release with one OpenBLAS Haswell thread, batch 8): micro-batches
/// and images are row ranges of one pixel matrix, so 1×1 convolutions (two of a bottleneck's three)
/// are a single GEMM on the activation and p2 stacks micro-batches by rows; NCHW needs a GEMM per
/// image, 65 against 80 GFLOP/s for a 7×7×2048→512 1×1, and cannot stack. The (kh, kw, c) im2col
/// order with the weight repacked beat (c, kh, kw) without repacking where activations dominate
/// (44 against 34 GFLOP/s for the 7×7 stem, 58 against 50 for a stride-2 56×56×128 3×3) and lost
/// where the weight does (63 against 72 for a 7×7×512 3×3: the repack copies 2.4 M floats per call).
/// The layer runs at 0.81–1.0 of a bare sgemm of the same shape.
public final class Conv2d: Layer {
    public let inputChannels: Int
    public let outputChannels: Int
    public let kernelSize: Int
    public let stride: Int
    public let padding: Int
    /// Floats of im2col (and of its gradient) per block of output pixels; at least one pixel per block.
    public let blockFloats: Int
    /// [outputChannels, inputChannels, kernelSize, kernelSize], torchvision's `weight`; Kaiming
    /// normal with mode fan_out for ReLU, std = √(2 / (outputChannels · k²)), as torchvision's ResNet.
    public let weight: Parameter
    /// [outputChannels], `nn.Conv2d`'s default U(−1/√fanIn, 1/√fanIn), fanIn = inputChannels · k²
    /// (torchvision's ResNet has none).
    public let bias: Parameter?
    /// x [batch, height, width, inputChannels], kept from forward for p1 and p2.
    private var saved = MicroBatchStore<Tensor>("Conv2d forward state")
    /// (x, dy [batch, outHeight, outWidth, outputChannels]) kept from p1 for p2.
    private var pending = MicroBatchStore<(input: Tensor, outputGradient: Tensor)>("Conv2d p2 stash")

    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, bias: Bool = false,
                blockFloats: Int = Conv2d.defaultBlockFloats) {
        precondition(inputChannels > 0 && outputChannels > 0 && kernelSize > 0 && stride > 0 && padding >= 0,
                     "Conv2d: \(inputChannels)→\(outputChannels), kernel \(kernelSize), stride \(stride), padding \(padding)")
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.blockFloats = blockFloats
        let fanOut = Float(outputChannels * kernelSize * kernelSize)
        weight = Parameter(name: "weight", shape: [outputChannels, inputChannels, kernelSize, kernelSize],
                           initialization: .normal(std: (2 / fanOut).squareRoot()), decays: true)
        let biasBound = 1 / Float(inputChannels * kernelSize * kernelSize).squareRoot()
        self.bias = bias
            ? Parameter(name: "bias", shape: [outputChannels], initialization: .custom { tensor, generator in
                tensor.fillUniform(bound: biasBound, using: &generator)
            }, decays: false)
            : nil
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    /// (height, width) of the output for an input of (height, width), or a `TwoBPError` when the
    /// padded input is smaller than the kernel.
    public func outputSize(height: Int, width: Int) throws -> (height: Int, width: Int) {
        let window = try WindowGeometry(batch: 1, height: height, width: width, channels: inputChannels,
                                        kernel: kernelSize, stride: stride, padding: padding, layer: "Conv2d")
        return (window.outputHeight, window.outputWidth)
    }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let output = try apply(input)
        try saved.put(input, for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) throws -> Tensor {
        let window = try geometry(of: input)
        // Every element is written: by the bias rows, or by the GEMMs with beta 0.
        let output = Tensor(uninitialized: [window.batch, window.outputHeight, window.outputWidth, outputChannels])
        if let bias { fillRows(output.pointer, with: bias.value.pointer, rows: window.outputPixels, columns: outputChannels) }
        let packed = packedWeight()
        let stack = PixelStack([window.outputPixels])
        var buffer: Tensor?
        for block in blocks(of: stack) {
            BLAS.gemm(transposeA: false, transposeB: true, m: block.count, n: outputChannels, k: patchSize,
                      a: columns([input], stack, block, buffer: &buffer), lda: patchSize, b: packed.pointer, ldb: patchSize,
                      beta: bias == nil ? 0 : 1, c: output.pointer + block.lowerBound * outputChannels, ldc: outputChannels)
        }
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        try backwardInput(outputGradient, microBatch: microBatch, into: nil)
    }

    /// p1 that adds dx into `inputGradient` instead of allocating it, for an input that feeds
    /// several convolutions (a bottleneck's conv1 and its downsample): dx is their sum.
    public func backwardInput(_ outputGradient: Tensor, microBatch: Int, accumulatingInto inputGradient: Tensor) throws {
        _ = try backwardInput(outputGradient, microBatch: microBatch, into: inputGradient)
    }

    /// dx into a fresh tensor, or dx += into `accumulator`; stashes (x, dy) for p2.
    private func backwardInput(_ outputGradient: Tensor, microBatch: Int, into accumulator: Tensor?) throws -> Tensor {
        let input = try saved.take(microBatch)
        let window = knownGeometry(of: input)
        precondition(outputGradient.shape == [window.batch, window.outputHeight, window.outputWidth, outputChannels],
                     "Conv2d p1: dy \(outputGradient.shape) for x \(input.shape)")
        precondition(accumulator.map { $0.shape == input.shape } ?? true, "Conv2d p1: accumulator of the wrong shape")
        let packed = packedWeight()
        let inputGradient: Tensor
        if isPointwise {
            inputGradient = accumulator ?? Tensor(uninitialized: input.shape)  // beta 0 when fresh
            BLAS.gemm(transposeA: false, transposeB: false, m: window.outputPixels, n: inputChannels, k: outputChannels,
                      a: outputGradient.pointer, lda: outputChannels, b: packed.pointer, ldb: inputChannels,
                      beta: accumulator == nil ? 0 : 1, c: inputGradient.pointer, ldc: inputChannels)
        } else {
            inputGradient = accumulator ?? Tensor(zeros: input.shape)  // col2im adds, and skips padding-only pixels
            let columnGradient = Tensor(uninitialized: [Swift.min(blockRows, window.outputPixels), patchSize])  // beta 0
            for block in blocks(of: PixelStack([window.outputPixels])) {
                BLAS.gemm(transposeA: false, transposeB: false, m: block.count, n: patchSize, k: outputChannels,
                          a: outputGradient.pointer + block.lowerBound * outputChannels, lda: outputChannels,
                          b: packed.pointer, ldb: patchSize, beta: 0, c: columnGradient.pointer, ldc: patchSize)
                col2imAdd(inputGradient.pointer, columnGradient.pointer, window, pixels: block)
            }
        }
        try pending.put((input, outputGradient), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        let stashes = try pending.take(work)
        guard !stashes.isEmpty else { return }
        let inputs = stashes.map(\.input)
        let outputGradients = stashes.map(\.outputGradient)
        let stack = PixelStack(outputGradients.map(\.rowCount))
        guard stack.total > 0 else { return }
        // [O, C, 1, 1] is already [O, K]: 1×1 kernels accumulate straight into the gradient.
        let packedGradient = kernelSize == 1 ? weight.gradient : Tensor(uninitialized: [outputChannels, patchSize])
        var (columnBuffer, gradientBuffer): (Tensor?, Tensor?) = (nil, nil)
        for (index, block) in blocks(of: stack).enumerated() {
            let dy = stackedRows(outputGradients, stack, block, width: outputChannels, buffer: &gradientBuffer)
            BLAS.gemm(transposeA: true, transposeB: false, m: outputChannels, n: patchSize, k: block.count,
                      a: dy, lda: outputChannels, b: columns(inputs, stack, block, buffer: &columnBuffer), ldb: patchSize,
                      beta: kernelSize == 1 || index > 0 ? 1 : 0, c: packedGradient.pointer, ldc: patchSize)
            if let bias { addColumnSums(bias.gradient.pointer, dy, rows: block.count, columns: outputChannels) }
        }
        if kernelSize > 1 {
            unpackAddConvolutionWeight(weight.gradient.pointer, packedGradient.pointer,
                                       outputs: outputChannels, channels: inputChannels, taps: kernelSize * kernelSize)
        }
    }

    /// K = k · k · inputChannels, the length of one receptive field.
    private var patchSize: Int { kernelSize * kernelSize * inputChannels }

    /// Output pixels per GEMM: the im2col buffer of a block holds at most `blockFloats`.
    private var blockRows: Int { Swift.max(1, blockFloats / patchSize) }

    /// 1×1, stride 1, no padding: the input's pixels are the GEMM's rows as they are.
    private var isPointwise: Bool { kernelSize == 1 && stride == 1 && padding == 0 }

    private func geometry(of input: Tensor) throws -> WindowGeometry {
        let (batch, height, width) = try checkedImageShape(of: input, channels: inputChannels, layer: "Conv2d")
        return try WindowGeometry(batch: batch, height: height, width: width, channels: inputChannels,
                                  kernel: kernelSize, stride: stride, padding: padding, layer: "Conv2d")
    }

    /// The geometry of an input forward has already accepted.
    private func knownGeometry(of input: Tensor) -> WindowGeometry {
        WindowGeometry(batch: input.shape[0], height: input.shape[1], width: input.shape[2], channels: inputChannels,
                       kernel: kernelSize, stride: stride, padding: padding)
    }

    /// The stacked output pixels of `stack`, `blockRows` at a time.
    private func blocks(of stack: PixelStack) -> [Range<Int>] {
        Swift.stride(from: 0, to: stack.total, by: blockRows).map { $0..<Swift.min($0 + blockRows, stack.total) }
    }

    /// cols [block.count, K] of stacked output pixels `block` of `inputs`: the input's own rows when
    /// pointwise, else im2col into `buffer` (made on first use, `blockRows` rows).
    private func columns(_ inputs: [Tensor], _ stack: PixelStack, _ block: Range<Int>, buffer: inout Tensor?) -> UnsafePointer<Float> {
        if isPointwise { return stackedRows(inputs, stack, block, width: patchSize, buffer: &buffer) }
        let columns = buffer ?? Tensor(uninitialized: [Swift.min(blockRows, stack.total), patchSize])  // im2col writes every element
        buffer = columns
        var target = columns.pointer
        for piece in stack.pieces(block) {
            im2col(target, inputs[piece.index].pointer, knownGeometry(of: inputs[piece.index]), pixels: piece.rows)
            target += piece.rows.count * patchSize
        }
        return UnsafePointer(columns.pointer)
    }

    /// `tensors` [rows_i, …, width] stacked along their rows, rows `block`: a pointer into the one tensor
    /// holding them, or a copy in `buffer` (made on first use, `blockRows` rows) when they straddle two.
    private func stackedRows(_ tensors: [Tensor], _ stack: PixelStack, _ block: Range<Int>, width: Int,
                             buffer: inout Tensor?) -> UnsafePointer<Float> {
        let pieces = stack.pieces(block)
        if pieces.count == 1 { return UnsafePointer(tensors[pieces[0].index].pointer + pieces[0].rows.lowerBound * width) }
        let rows = buffer ?? Tensor(uninitialized: [Swift.min(blockRows, stack.total), width])  // every row copied
        buffer = rows
        var target = rows.pointer
        for piece in pieces {
            target.update(from: tensors[piece.index].pointer + piece.rows.lowerBound * width, count: piece.rows.count * width)
            target += piece.rows.count * width
        }
        return UnsafePointer(rows.pointer)
    }

    /// `weight` as Wₚ [O, K] in (kh, kw, c) order: the weight itself for 1×1 kernels, else a repacked copy.
    private func packedWeight() -> Tensor {
        guard kernelSize > 1 else { return weight.value }
        let packed = Tensor(uninitialized: [outputChannels, patchSize])
        packConvolutionWeight(packed.pointer, weight.value.pointer, outputs: outputChannels, channels: inputChannels,
                              taps: kernelSize * kernelSize)
        return packed
    }
}

extension Conv2d {
    /// Floats in one im2col block (16 MiB). im2col and its gradient are built and consumed that many
    /// floats at a time, so the buffer stays below glibc's 32 MiB mmap threshold and is reused from the
    /// heap instead of being faulted in afresh on each call (a 58 MB buffer for a 56×56×64 3×3 layer at
    /// batch 8 spent a quarter of the forward in page faults), and `.allPending` p2 needs no memory
    /// beyond the stash. The GEMMs keep at least 910 rows (K = 4608, ResNet's widest receptive field).
    public static let defaultBlockFloats = 1 << 22
}

/// The output pixels of several micro-batches stacked in order: which micro-batch holds which rows.
struct PixelStack {
    /// The first stacked pixel of each micro-batch, then the total.
    private let offsets: [Int]

    init(_ counts: [Int]) {
        var offsets = [0]
        for count in counts { offsets.append(offsets.last! + count) }
        self.offsets = offsets
    }

    var total: Int { offsets.last! }

    /// The micro-batches' own pixel ranges that make up stacked pixels `range`, in order.
    func pieces(_ range: Range<Int>) -> [(index: Int, rows: Range<Int>)] {
        var pieces: [(index: Int, rows: Range<Int>)] = []
        for index in 0..<(offsets.count - 1) where offsets[index] < range.upperBound && offsets[index + 1] > range.lowerBound {
            let rows = Swift.max(range.lowerBound, offsets[index])..<Swift.min(range.upperBound, offsets[index + 1])
            pieces.append((index, (rows.lowerBound - offsets[index])..<(rows.upperBound - offsets[index])))
        }
        return pieces
    }
}

/// Where a k×k window with stride s and padding p lands on a channels-last image (convolution and
/// max-pooling): PyTorch's output size ⌊(size + 2p − k) / s⌋ + 1 per dimension.
struct WindowGeometry {
    let batch, height, width, channels: Int
    let kernel, stride, padding: Int
    let outputHeight, outputWidth: Int

    init(batch: Int, height: Int, width: Int, channels: Int, kernel: Int, stride: Int, padding: Int) {
        (self.batch, self.height, self.width, self.channels) = (batch, height, width, channels)
        (self.kernel, self.stride, self.padding) = (kernel, stride, padding)
        outputHeight = (height + 2 * padding - kernel) / stride + 1
        outputWidth = (width + 2 * padding - kernel) / stride + 1
    }

    /// The same, or a `TwoBPError` naming `layer` when the padded image is smaller than the window.
    init(batch: Int, height: Int, width: Int, channels: Int, kernel: Int, stride: Int, padding: Int, layer: String) throws {
        guard height > 0, width > 0, height + 2 * padding >= kernel, width + 2 * padding >= kernel else {
            throw TwoBPError("\(layer): a \(height)x\(width) image with padding \(padding) is smaller than the \(kernel)x\(kernel) window")
        }
        self.init(batch: batch, height: height, width: width, channels: channels, kernel: kernel, stride: stride, padding: padding)
    }

    var outputPixels: Int { batch * outputHeight * outputWidth }

    /// (image, output row, output column) of output pixel `pixel`.
    @inline(__always)
    func position(of pixel: Int) -> (batch: Int, row: Int, column: Int) {
        (pixel / (outputHeight * outputWidth), (pixel / outputWidth) % outputHeight, pixel % outputWidth)
    }

    /// For output index `index` along a dimension of `size` input pixels: the input index under
    /// kernel tap 0 and the taps low ..< high that fall inside the image (empty when none does).
    @inline(__always)
    func span(_ index: Int, size: Int) -> (start: Int, low: Int, high: Int) {
        let start = index * stride - padding
        return (start, Swift.max(0, -start), Swift.min(kernel, size - start))
    }
}

/// Writes the receptive field of each output pixel in `pixels` (indices of y, channels-last) of x
/// as one row of `columns` [pixels.count, k · k · C] in (kh, kw, c) order, zeros where the window
/// leaves the image.
func im2col(_ columns: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ window: WindowGeometry, pixels: Range<Int>) {
    let (k, c) = (window.kernel, window.channels)
    var row = columns
    for pixel in pixels {
        let (b, oh, ow) = window.position(of: pixel)
        let rows = window.span(oh, size: window.height)
        let cols = window.span(ow, size: window.width)
        for kh in 0..<k {
            let target = row + kh * k * c
            guard kh >= rows.low, kh < rows.high, cols.low < cols.high else {
                target.update(repeating: 0, count: k * c)
                continue
            }
            let source = x + ((b * window.height + rows.start + kh) * window.width + cols.start + cols.low) * c
            target.update(repeating: 0, count: cols.low * c)
            (target + cols.low * c).update(from: source, count: (cols.high - cols.low) * c)
            (target + cols.high * c).update(repeating: 0, count: (k - cols.high) * c)
        }
        row += k * k * c
    }
}

/// The transpose of `im2col`: adds each row of `columns` [pixels.count, k · k · C] onto the pixels of
/// dx (channels-last, `window`) it was read from; taps outside the image are dropped.
func col2imAdd(_ dx: UnsafeMutablePointer<Float>, _ columns: UnsafePointer<Float>, _ window: WindowGeometry, pixels: Range<Int>) {
    let (k, c) = (window.kernel, window.channels)
    var row = columns
    for pixel in pixels {
        let (b, oh, ow) = window.position(of: pixel)
        let rows = window.span(oh, size: window.height)
        let cols = window.span(ow, size: window.width)
        if cols.low < cols.high {
            for kh in rows.low..<Swift.max(rows.low, rows.high) {
                let source = row + (kh * k + cols.low) * c
                let target = dx + ((b * window.height + rows.start + kh) * window.width + cols.start + cols.low) * c
                for i in 0..<((cols.high - cols.low) * c) { target[i] += source[i] }
            }
        }
        row += k * k * c
    }
}

/// weight [O, C, taps] (taps = kh · k + kw) → packed [O, taps, C].
func packConvolutionWeight(_ packed: UnsafeMutablePointer<Float>, _ weight: UnsafePointer<Float>, outputs: Int, channels: Int, taps: Int) {
    for o in 0..<outputs {
        let (source, target) = (weight + o * channels * taps, packed + o * channels * taps)
        for c in 0..<channels {
            for t in 0..<taps { target[t * channels + c] = source[c * taps + t] }
        }
    }
}

/// gradient [O, C, taps] += packed [O, taps, C], the inverse of `packConvolutionWeight`.
func unpackAddConvolutionWeight(_ gradient: UnsafeMutablePointer<Float>, _ packed: UnsafePointer<Float>, outputs: Int, channels: Int, taps: Int) {
    for o in 0..<outputs {
        let (source, target) = (packed + o * channels * taps, gradient + o * channels * taps)
        for c in 0..<channels {
            for t in 0..<taps { target[c * taps + t] += source[t * channels + c] }
        }
    }
}
