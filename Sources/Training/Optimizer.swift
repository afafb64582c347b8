import Checkpoints
import Foundation
import Layers
import Tensor

/// What a rank steps its parameters with after each step's gradients (AdamW, SGD): one protocol,
/// so the trainer, checkpoints and benchmarks have one code path whatever `--optimizer` says.
///
/// Each keeps its state in flat buffers laid out like `parameters`, reads gradients without
/// zeroing them, and saves its state as named tensors (`<prefix>.<parameter name>`) with
/// safetensors metadata naming the optimizer and the step count, so a resume with another
/// optimizer is refused rather than misread.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    /// Optimizer steps taken.
    var step: Int { get }
    /// Takes one step with rate `learningRate`. Pass the global gradient norm (over all stages) to
    /// clip to the configuration's limit; a non-finite norm is an error and leaves parameters and
    /// state untouched. Returns the scale applied to the gradients (1 when not clipped).
    @discardableResult
    func update(learningRate: Float, globalGradientNorm: Double?) throws -> Float
    /// The state as named views (no copies), for every parameter or only for `subset`.
    func stateTensors(of subset: [Parameter]?) -> [NamedTensor]
    /// Safetensors metadata saved with `stateTensors`: the optimizer's name and the step count.
    var stateMetadata: [String: String] { get }
    /// Restores state saved from `stateTensors` and `stateMetadata` by the same optimizer.
    func loadState(from archive: SafeTensorsArchive) throws
}

extension Optimizer {
    @discardableResult
    public func update(learningRate: Float) throws -> Float { try update(learningRate: learningRate, globalGradientNorm: nil) }

    public func stateTensors() -> [NamedTensor] { stateTensors(of: nil) }
}

/// Which optimizer a run uses, with its hyperparameters (`--optimizer adamw|sgd`).
public enum OptimizerConfiguration: Equatable, Sendable {
    case adamw(AdamW.Configuration)
    case sgd(SGD.Configuration)

    /// `adamw` or `sgd`: the `--optimizer` value and the name checkpoints record.
    public var name: String {
        switch self {
        case .adamw: AdamW.name
        case .sgd: SGD.name
        }
    }

    /// The optimizer over `parameters`.
    public func make(parameters: [Parameter]) throws -> Optimizer {
        switch self {
        case .adamw(let configuration): try AdamW(parameters: parameters, configuration: configuration)
        case .sgd(let configuration): try SGD(parameters: parameters, configuration: configuration)
        }
    }
}

/// The global gradient norm's pieces, shared by the optimizers.
public enum GradientNorm {
    /// Σ g² over `parameters`' gradients, in Double and a fixed order. Each pipeline stage computes
    /// its own; the global norm is √(sum over stages).
    public static func squaredSum(_ parameters: [Parameter]) -> Double {
        var total = 0.0
        for parameter in parameters {
            let g = parameter.gradient.pointer
            var sum: Double = 0
            for i in 0..<parameter.gradient.count {
                let x = Double(g[i])
                sum = sum.addingProduct(x, x)
            }
            total += sum
        }
        return total
    }

    /// The factor gradients are multiplied by for global-norm clipping
    /// (PyTorch's `clip_grad_norm_`: `min(1, maxNorm / (norm + 1e-6))`).
    public static func clippingScale(globalNorm: Double, maxNorm: Double) -> Float {
        Float(Swift.min(1, maxNorm / (globalNorm + 1e-6)))
    }

    /// The scale of step `step` (1-based, for the message): 1 without a norm or a limit; throws on a non-finite norm.
    static func scale(globalNorm: Double?, maxNorm: Double?, step: Int) throws -> Float {
        guard let globalNorm else { return 1 }
        guard globalNorm.isFinite else { throw TwoBPError("gradient norm is \(globalNorm) at step \(step): training diverged") }
        return maxNorm.map { clippingScale(globalNorm: globalNorm, maxNorm: $0) } ?? 1
    }
}

/// The state layout, checks and metadata both optimizers share.
enum OptimizerState {
    /// Start of each parameter in a flat state buffer, and the buffer's length, after checking that
    /// no name appears twice and that the gradient-norm limit, if any, is positive; errors name `optimizer`.
    static func layout(of parameters: [Parameter], maxGradientNorm: Double?, optimizer: String) throws -> (offsets: [Int], total: Int) {
        var seen = Set<String>()
        for parameter in parameters where !seen.insert(parameter.name).inserted {
            throw TwoBPError("\(optimizer): parameter name '\(parameter.name)' appears twice")
        }
        if let maxNorm = maxGradientNorm, !(maxNorm > 0) {
            throw TwoBPError("\(optimizer): the gradient-norm limit must be > 0, not \(maxNorm)")
        }
        var offsets: [Int] = []
        var total = 0
        for parameter in parameters {
            offsets.append(total)
            total += parameter.value.count
        }
        return (offsets, total)
    }

    static func metadata(optimizer: String, step: Int) -> [String: String] {
        SafeTensors.defaultMetadata.merging(["optimizer": optimizer, "step": String(step)]) { $1 }
    }

    /// The saved step count, after checking that `optimizer` saved the state (files without the
    /// name come from AdamW, the only optimizer before SGD).
    static func savedStep(in archive: SafeTensorsArchive, optimizer: String) throws -> Int {
        let saved = archive.metadata["optimizer"] ?? AdamW.name
        guard saved == optimizer else {
            throw TwoBPError("\(archive.source): the optimizer state was saved by \(saved), but this run uses \(optimizer) (--optimizer \(saved) resumes it)")
        }
        guard let text = archive.metadata["step"], let step = Int(text), step >= 0 else {
            throw TwoBPError("\(archive.source): optimizer state has no valid \"step\" in its metadata")
        }
        return step
    }
}
