import Tensor

/// Max-pooling over k×k windows, PyTorch `nn.MaxPool2d(kernel_size: k, stride: s, padding: p)`
/// (dilation 1, floor mode) on channels-last images: x [batch, height, width, channels] →
/// y [batch, ⌊(height + 2p − k) / s⌋ + 1, …, channels]; padding never wins (it is −∞).
///
/// Each window is scanned row by row and the first maximum is kept (a later value must be strictly
/// greater; a NaN always takes over), as PyTorch's CPU kernel does. Forward keeps x (the ReLU before
/// it keeps the same tensor), and p1 finds the same arg-max again and routes dy there, so no index
/// tensor is stored. No parameters: p2 only retires the micro-batch.
public final class MaxPool2d: Layer {
    public let kernelSize: Int
    public let stride: Int
    public let padding: Int
    /// x, kept from forward for p1.
    private var saved = MicroBatchStore<Tensor>("MaxPool2d forward state")
    private var pending = MicroBatchStore<Void>("MaxPool2d p2 stash")

    /// torchvision's ResNet stem pools 3×3 with stride 2 and padding 1. PyTorch requires
    /// padding ≤ kernelSize / 2, which leaves every window at least one image pixel.
    public init(kernelSize: Int = 3, stride: Int = 2, padding: Int = 1) {
        precondition(kernelSize > 0 && stride > 0 && padding >= 0 && padding <= kernelSize / 2,
                     "MaxPool2d: kernel \(kernelSize), stride \(stride), padding \(padding)")
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
    }

    public var parameters: [Parameter] { [] }

    /// (height, width) of the output for an input of (height, width), or a `TwoBPError` when the
    /// padded input is smaller than the window.
    public func outputSize(height: Int, width: Int) throws -> (height: Int, width: Int) {
        let window = try WindowGeometry(batch: 1, height: height, width: width, channels: 1,
                                        kernel: kernelSize, stride: stride, padding: padding, layer: "MaxPool2d")
        return (window.outputHeight, window.outputWidth)
    }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let output = try apply(input)
        try saved.put(input, for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) throws -> Tensor {
        guard input.shape.count == 4 else { throw TwoBPError("MaxPool2d: expected [batch, height, width, channels], got \(input.shape)") }
        let window = try WindowGeometry(batch: input.shape[0], height: input.shape[1], width: input.shape[2], channels: input.shape[3],
                                        kernel: kernelSize, stride: stride, padding: padding, layer: "MaxPool2d")
        let output = Tensor(uninitialized: [window.batch, window.outputHeight, window.outputWidth, window.channels])
        let positions = UnsafeMutablePointer<Int32>.allocate(capacity: window.channels)
        defer { positions.deallocate() }
        for pixel in 0..<window.outputPixels {
            windowMaximum(output.pointer + pixel * window.channels, positions, input.pointer, pixel: pixel, window)
        }
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let input = try saved.take(microBatch)
        let window = WindowGeometry(batch: input.shape[0], height: input.shape[1], width: input.shape[2], channels: input.shape[3],
                                    kernel: kernelSize, stride: stride, padding: padding)
        precondition(outputGradient.shape == [window.batch, window.outputHeight, window.outputWidth, window.channels],
                     "MaxPool2d p1: dy \(outputGradient.shape) for x \(input.shape)")
        let inputGradient = Tensor(zeros: input.shape)
        let channels = window.channels
        let maxima = UnsafeMutablePointer<Float>.allocate(capacity: channels)
        let positions = UnsafeMutablePointer<Int32>.allocate(capacity: channels)
        defer {
            maxima.deallocate()
            positions.deallocate()
        }
        for pixel in 0..<window.outputPixels {
            windowMaximum(maxima, positions, input.pointer, pixel: pixel, window)
            let dy = outputGradient.pointer + pixel * channels
            for c in 0..<channels { inputGradient.pointer[Int(positions[c]) * channels + c] += dy[c] }
        }
        try pending.put((), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        _ = try pending.take(work)
    }
}

/// Per channel, the maximum of x over output pixel `pixel`'s window (into `maxima` [channels]) and the
/// input pixel it came from (into `positions`, a pixel index of x): rows then columns, first maximum
/// kept, NaN taking over; starts at −∞ on the window's first image pixel. 16 channels at a time by
/// compare-and-select, as a scalar loop's branch mispredicts on random data.
func windowMaximum(
    _ maxima: UnsafeMutablePointer<Float>, _ positions: UnsafeMutablePointer<Int32>, _ x: UnsafePointer<Float>,
    pixel: Int, _ window: WindowGeometry
) {
    let channels = window.channels
    let (b, oh, ow) = window.position(of: pixel)
    let rows = window.span(oh, size: window.height)
    let cols = window.span(ow, size: window.width)
    let first = Int32((b * window.height + rows.start + rows.low) * window.width + cols.start + cols.low)
    var c0 = 0
    while c0 < channels {
        let lanes = Swift.min(16, channels - c0)
        var maximum = FastMath.Vector(repeating: -.infinity)
        var position = SIMD16<Int32>(repeating: first)
        for kh in rows.low..<rows.high {
            for kw in cols.low..<cols.high {
                let pixel = (b * window.height + rows.start + kh) * window.width + cols.start + kw
                let value = FastMath.load(x + pixel * channels + c0, count: lanes, fill: -.infinity)
                let takes = (value .> maximum) .| (value .!= value)
                maximum = maximum.replacing(with: value, where: takes)
                position = position.replacing(with: Int32(pixel), where: takes)
            }
        }
        FastMath.store(maximum, maxima + c0, count: lanes)
        for lane in 0..<lanes { positions[c0 + lane] = position[lane] }
        c0 += 16
    }
}

/// The mean over each image's pixels, PyTorch `nn.AdaptiveAvgPool2d((1, 1))` then flattened:
/// x [batch, height, width, channels] → y [batch, channels] (sums in Double).
/// p1 spreads dy[b, c] / (height · width) over every pixel; no parameters, p2 only retires the micro-batch.
public final class GlobalAveragePool: Layer {
    /// x's shape, kept from forward for p1.
    private var saved = MicroBatchStore<[Int]>("GlobalAveragePool forward state")
    private var pending = MicroBatchStore<Void>("GlobalAveragePool p2 stash")

    public init() {}

    public var parameters: [Parameter] { [] }

    public func forward(_ input: Tensor, microBatch: Int) throws -> Tensor {
        let output = try apply(input)
        try saved.put(input.shape, for: microBatch)
        return output
    }

    /// The forward computation alone, saving nothing (for inference).
    public func apply(_ input: Tensor) throws -> Tensor {
        guard input.shape.count == 4, input.shape[1] > 0, input.shape[2] > 0 else {
            throw TwoBPError("GlobalAveragePool: expected [batch, height, width, channels], got \(input.shape)")
        }
        let (batch, pixels, channels) = (input.shape[0], input.shape[1] * input.shape[2], input.shape[3])
        let output = Tensor(uninitialized: [batch, channels])
        let sums = UnsafeMutablePointer<Double>.allocate(capacity: channels)
        defer { sums.deallocate() }
        for b in 0..<batch {
            sums.update(repeating: 0, count: channels)
            for p in 0..<pixels {
                let row = input.pointer + (b * pixels + p) * channels
                for c in 0..<channels { sums[c] += Double(row[c]) }
            }
            for c in 0..<channels { output.pointer[b * channels + c] = Float(sums[c] / Double(pixels)) }
        }
        return output
    }

    public func backwardInput(_ outputGradient: Tensor, microBatch: Int) throws -> Tensor {
        let shape = try saved.take(microBatch)
        let (batch, pixels, channels) = (shape[0], shape[1] * shape[2], shape[3])
        precondition(outputGradient.shape == [batch, channels], "GlobalAveragePool p1: dy \(outputGradient.shape) for x \(shape)")
        let inputGradient = Tensor(uninitialized: shape)
        let scale = 1 / Float(pixels)
        for b in 0..<batch {
            let dy = outputGradient.pointer + b * channels
            for p in 0..<pixels {
                let dx = inputGradient.pointer + (b * pixels + p) * channels
                for c in 0..<channels { dx[c] = dy[c] * scale }
            }
        }
        try pending.put((), for: microBatch)
        return inputGradient
    }

    public func backwardWeight(_ work: WeightGradientWork) throws {
        _ = try pending.take(work)
    }
}
