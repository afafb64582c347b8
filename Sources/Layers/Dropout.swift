import Tensor

/// Which forward a dropout mask belongs to: the run's seed, the optimizer step, and the global
/// index, within the step's whole batch, of the micro-batch's first sample (sample b of the
/// micro-batch is sample `firstSample + b` of the step).
///
/// The caller passes one to every training forward; together with a layer's `Dropout.site` and an
/// element's position inside its sample it fixes the mask, so a pipelined step (micro-batches on
/// any threads or processes, in any order) drops exactly what the same step on one device drops.
public struct DropoutContext: Sendable, Equatable {
    public var seed: UInt64
    public var step: Int
    public var firstSample: Int

    public init(seed: UInt64, step: Int, firstSample: Int) {
        self.seed = seed
        self.step = step
        self.firstSample = firstSample
    }
}

/// Inverted dropout (PyTorch's `nn.Dropout` at training time): each element is zeroed with
/// probability `probability` and the survivors are scaled by 1 / (1 − probability).
///
/// There is no generator state. Element e (its row-major index inside its sample) of sample s at
/// site `site` is dropped iff
///
///     draw = high 32 bits of mix(key + e · γ)  <  threshold = round(probability · 2³²),
///     key  = absorb(absorb(absorb(seed, step), site), s),   absorb(k, v) = mix((k ^ v) + γ),
///
/// with `mix` the SplitMix64 finaliser and γ = 0x9E3779B97F4A7C15 (wrapping arithmetic, step and
/// s as two's-complement 64-bit). So the mask is a pure function of (seed, step, global sample,
/// site, position), and backward recomputes it instead of storing it.
///
/// `site` names one dropout call in the model and must be the same on every process: the model
/// numbers its sites from the global layer index, never a chunk-local one (BERT: the embeddings
/// site 0, encoder layer i the `BertLayer.dropoutSiteCount` sites from 1 + 3i).
/// Probability 0 costs nothing: no hash, no copy.
public struct Dropout: Sendable, Equatable {
    public let probability: Float
    public let site: UInt64
    /// Elements whose draw is below this are dropped (round(probability · 2³²) < 2³²).
    private let threshold: UInt64
    /// 1 / (1 − probability), applied to the survivors.
    private let scale: Float

    /// Throws unless 0 ≤ probability < 1 (a config's `hidden_dropout_prob` or
    /// `attention_probs_dropout_prob`).
    public init(probability: Float, site: UInt64) throws {
        guard probability >= 0, probability < 1 else {
            throw TwoBPError("dropout probability must be in [0, 1), got \(probability)")
        }
        self.init(checkedProbability: probability, site: site)
    }

    private init(checkedProbability probability: Float, site: UInt64) {
        self.probability = probability
        self.site = site
        threshold = UInt64((Double(probability) * 0x1p32).rounded())
        scale = 1 / (1 - probability)
    }

    /// No dropout (probability 0).
    public static let disabled = Dropout(checkedProbability: 0, site: 0)

    /// Whether this dropout drops anything when given a context.
    public var isActive: Bool { probability > 0 }

    /// Drops, in place, elements of `tensor` [batch, ...] (sample b = dim 0 index b, global sample
    /// `context.firstSample + b`); nothing when inactive or without a context.
    public func apply(_ tensor: Tensor, context: DropoutContext?) {
        guard isActive, let context, tensor.count > 0 else { return }
        let batch = tensor.shape.first ?? 1
        let sampleSize = tensor.count / batch
        for b in 0..<batch {
            let values = tensor.pointer + b * sampleSize
            mask(values, from: values, count: sampleSize, sample: context.firstSample + b, offset: 0, context: context)
        }
    }

    /// `tensor` with the mask applied, as a fresh tensor (the backward of a dropped activation
    /// whose incoming gradient is still needed elsewhere, e.g. by a residual); `tensor` itself
    /// when inactive or without a context.
    public func applied(to tensor: Tensor, context: DropoutContext?) -> Tensor {
        guard isActive, context != nil else { return tensor }
        let result = tensor.copy()
        apply(result, context: context)
        return result
    }

    /// destination[i] = source[i] · (keep ? scale : 0) for elements offset ..< offset + count of
    /// global sample `sample`; destination may be source.
    func mask(_ destination: UnsafeMutablePointer<Float>, from source: UnsafePointer<Float>, count: Int,
              sample: Int, offset: Int, context: DropoutContext) {
        let key = Dropout.absorb(Dropout.absorb(Dropout.absorb(context.seed, UInt64(bitPattern: Int64(context.step))), site),
                                 UInt64(bitPattern: Int64(sample)))
        let (threshold, scale) = (threshold, scale)
        var counter = key &+ UInt64(offset) &* Dropout.golden
        for i in 0..<count {
            let draw = Dropout.mix(counter) >> 32
            destination[i] = draw >= threshold ? source[i] * scale : 0
            counter &+= Dropout.golden
        }
    }

    private static let golden: UInt64 = 0x9E37_79B9_7F4A_7C15

    /// The SplitMix64 finaliser (a bijection of UInt64).
    @inline(__always)
    private static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    @inline(__always)
    private static func absorb(_ key: UInt64, _ value: UInt64) -> UInt64 {
        mix((key ^ value) &+ golden)
    }
}
