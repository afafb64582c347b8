import Tensor

/// 2-D convolution, PyTorch `nn.Conv2d` with groups 1 and dilation 1, on channels-last images:
/// x [batch, height, width, inputChannels] → y [batch, outHeight, outWidth, outputChannels] with
///
///     y[b, i, j, o] = Σ_{kh, kw, c} x[b, i·s − p + kh, j·s − p + kw, c] · weight[o, c, kh, kw]  (+ bias[o])
///
/// (zero outside the image), outHeight = ⌊(height + 2p − k) / s⌋ + 1, likewise the width.
///
/// Every output pixel is a row, so the convolution is one GEMM over the micro-batch's pixels:
/// y [M, O] = cols [M, K] · Wₚᵀ with M = batch · outHeight · outWidth and K = k · k · C. Row m of
/// `cols` (im2col) is pixel m's receptive field in (kh, kw, c) order: in channels-last memory each
/// kernel row kh reads one contiguous run of up to k · C floats, so im2col is a few block copies per
/// pixel. Wₚ [O, K] is `weight` [O, C, k, k] (torchvision's layout, what checkpoints store) repacked
/// to (kh, kw, c) order on each call, a weight-sized copy. A 1×1 stride-1 unpadded convolution is a
/// plain GEMM on x itself: no im2col and no repack.
///
/// p1, the transposed convolution: dcols [M, K] = dy [M, O] · Wₚ, and col2im adds each row back onto
/// the input pixels it was read from. p2: dWₚ [O, K] = dyᵀ · cols with cols recomputed from the
/// stashed x (k² times smaller to keep than cols), folded back into `weight`'s layout; db = Σ dy.
/// Under `.allPending` the pixels of all stashed micro-batches are stacked: one im2col buffer and
/// one GEMM.
public final class Conv2d: Layer {
    public let inputChannels: Int
    public let outputChannels: Int
    public let kernelSize: Int
    public let stride: Int
    public let padding: Int
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

    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, bias: Bool = false) {
        precondition(inputChannels > 0 && outputChannels > 0 && kernelSize > 0 && stride > 0 && padding >= 0,
                     "Conv2d: \(inputChannels)→\(outputChannels), kernel \(kernelSize), stride \(stride), padding \(padding)")
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
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
        // Every element is written: by the bias rows, or by the GEMM with beta 0.
        let output = Tensor(uninitialized: [window.batch, window.outputHeight, window.outputWidth, outputChannels])
        if let bias { fillRows(output.pointer, with: bias.value.pointer, rows: window.outputPixels, columns: outputChannels) }
        let columns = self.columns(of: [input])
        let packed = packedWeight()
        BLAS.gemm(transposeA: false, transposeB: true, m: window.outputPixels, n: outputChannels, k: patchSize,
                  a: columns.pointer, lda: patchSize, b: packed.pointer, ldb: patchSize,
                  beta: bias == nil ? 0 : 1, c: output.pointer, ldc: outputChannels)
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
            let columnGradient = Tensor(uninitialized: [window.outputPixels, patchSize])  // beta 0
            BLAS.gemm(transposeA: false, transposeB: false, m: window.outputPixels, n: patchSize, k: outputChannels,
                      a: outputGradient.pointer, lda: outputChannels, b: packed.pointer, ldb: patchSize,
                      beta: 0, c: columnGradient.pointer, ldc: patchSize)
            inputGradient = accumulator ?? Tensor(zeros: input.shape)  // col2im adds, and skips padding-only pixels
            col2imAdd(inputGradient.pointer, columnGradient.pointer, window)
        }
        try pending.put((input, outputGradient), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        let stashes = try pending.take(work)
        guard !stashes.isEmpty else { return }
        let columns = self.columns(of: stashes.map(\.input))
        let outputGradient = stashes.count == 1 ? stashes[0].outputGradient
            : Tensor.concatenateRows(stashes.map { $0.outputGradient.reshaped([$0.outputGradient.rowCount, outputChannels]) })
        let pixels = outputGradient.rowCount
        if kernelSize == 1 {
            // [O, C, 1, 1] is already [O, K]: accumulate straight into the gradient.
            BLAS.gemm(transposeA: true, transposeB: false, m: outputChannels, n: patchSize, k: pixels,
                      a: outputGradient.pointer, lda: outputChannels, b: columns.pointer, ldb: patchSize,
                      beta: 1, c: weight.gradient.pointer, ldc: patchSize)
        } else {
            let packedGradient = Tensor(uninitialized: [outputChannels, patchSize])  // beta 0
            BLAS.gemm(transposeA: true, transposeB: false, m: outputChannels, n: patchSize, k: pixels,
                      a: outputGradient.pointer, lda: outputChannels, b: columns.pointer, ldb: patchSize,
                      beta: 0, c: packedGradient.pointer, ldc: patchSize)
            unpackAddConvolutionWeight(weight.gradient.pointer, packedGradient.pointer,
                                       outputs: outputChannels, channels: inputChannels, taps: kernelSize * kernelSize)
        }
        if let bias { addColumnSums(bias.gradient.pointer, outputGradient.pointer, rows: pixels, columns: outputChannels) }
    }

    /// K = k · k · inputChannels, the length of one receptive field.
    private var patchSize: Int { kernelSize * kernelSize * inputChannels }

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

    /// cols [Σ pixels, K] of the inputs stacked in order: the inputs themselves when pointwise (one
    /// input: no copy), else im2col of each into its block of rows.
    private func columns(of inputs: [Tensor]) -> Tensor {
        if isPointwise {
            return inputs.count == 1 ? inputs[0] : Tensor.concatenateRows(inputs.map { $0.reshaped([$0.rowCount, patchSize]) })
        }
        let windows = inputs.map(knownGeometry)
        let columns = Tensor(uninitialized: [windows.reduce(0) { $0 + $1.outputPixels }, patchSize])  // im2col writes every element
        var row = 0
        for (input, window) in zip(inputs, windows) {
            im2col(columns.pointer + row * patchSize, input.pointer, window)
            row += window.outputPixels
        }
        return columns
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

    /// For output index `index` along a dimension of `size` input pixels: the input index under
    /// kernel tap 0 and the taps low ..< high that fall inside the image (empty when none does).
    @inline(__always)
    func span(_ index: Int, size: Int) -> (start: Int, low: Int, high: Int) {
        let start = index * stride - padding
        return (start, Swift.max(0, -start), Swift.min(kernel, size - start))
    }
}

/// Writes the receptive field of each output pixel of x (channels-last, `window`) as one row of
/// `columns` [outputPixels, k · k · C] in (kh, kw, c) order, zeros where the window leaves the image.
func im2col(_ columns: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ window: WindowGeometry) {
    let (k, c) = (window.kernel, window.channels)
    var row = columns
    for b in 0..<window.batch {
        for oh in 0..<window.outputHeight {
            let rows = window.span(oh, size: window.height)
            for ow in 0..<window.outputWidth {
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
    }
}

/// The transpose of `im2col`: adds each row of `columns` [outputPixels, k · k · C] onto the pixels of
/// dx (channels-last, `window`) it was read from; taps outside the image are dropped.
func col2imAdd(_ dx: UnsafeMutablePointer<Float>, _ columns: UnsafePointer<Float>, _ window: WindowGeometry) {
    let (k, c) = (window.kernel, window.channels)
    var row = columns
    for b in 0..<window.batch {
        for oh in 0..<window.outputHeight {
            let rows = window.span(oh, size: window.height)
            for ow in 0..<window.outputWidth {
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
