import Layers
import Tensor

/// Initialisation that depends only on the run seed and each parameter's full name, so every
/// partition of a model into chunks, on every process, starts from the same weights.
public enum ParameterInitialization {
    /// 64-bit FNV-1a of `bytes`.
    public static func fnv1a64<Bytes: Sequence>(_ bytes: Bytes) -> UInt64 where Bytes.Element == UInt8 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return hash
    }

    /// The `SeededGenerator` seed of parameter `name`: FNV-1a over the run seed's 8 little-endian
    /// bytes followed by the name's UTF-8.
    public static func seed(runSeed: UInt64, name: String) -> UInt64 {
        fnv1a64((0..<8).map { UInt8(truncatingIfNeeded: runSeed >> (8 * $0)) } + Array(name.utf8))
    }

    /// Fills every parameter as its layer asked (`Parameter.initialization`), each random one from
    /// its own generator seeded by (run seed, full name); `.normal(std: nil)` uses `std`, the
    /// model's scale (Hugging Face's `initializer_range`). Gradients are zeroed.
    public static func initialize(_ parameters: [Parameter], runSeed: UInt64, std: Float) {
        for parameter in parameters {
            var generator = SeededGenerator(seed: seed(runSeed: runSeed, name: parameter.name))
            switch parameter.initialization {
            case .normal(let own):
                parameter.value.fillNormal(std: own ?? std, using: &generator)
            case .constant(let value):
                parameter.value.buffer.update(repeating: value)
            case .custom(let fill):
                fill(parameter.value, &generator)
            }
            parameter.zeroGradient()
        }
    }
}
