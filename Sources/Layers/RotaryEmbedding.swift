import Foundation
import Tensor

/// Rotary position embedding (Su et al. 2021) in Hugging Face's rotate-half convention
/// (`LlamaRotaryEmbedding` + `apply_rotary_pos_emb`): within each head of size d, element i < d/2
/// pairs with element i + d/2 and the pair turns by angle `t · inv_freq[i]`,
/// `inv_freq[i] = theta^(-2i/d)`:
///
///     out[i]       = x[i] · cos − x[i + d/2] · sin
///     out[i + d/2] = x[i + d/2] · cos + x[i] · sin
///
/// The cos/sin tables are computed once, in Double and rounded to Float, for every position
/// below `maxPositions`; one instance is shared by all attention layers of a model.
/// (Hugging Face forms `t · inv_freq` in Float32, so at large t its angles carry ~1e-4 rad of
/// rounding that these tables do not.)
public final class RotaryEmbedding {
    public let headSize: Int
    public let maxPositions: Int
    public let theta: Double
    /// cos(t · inv_freq[i]), [maxPositions, headSize / 2].
    private let cosines: Tensor
    /// sin(t · inv_freq[i]), [maxPositions, headSize / 2].
    private let sines: Tensor

    public init(headSize: Int, maxPositions: Int, theta: Double = 10000) {
        precondition(headSize > 0 && headSize % 2 == 0, "RoPE needs an even head size, got \(headSize)")
        self.headSize = headSize
        self.maxPositions = maxPositions
        self.theta = theta
        let half = headSize / 2
        cosines = Tensor(zeros: [maxPositions, half])
        sines = Tensor(zeros: [maxPositions, half])
        for i in 0..<half {
            let inverseFrequency = 1 / Foundation.pow(theta, Double(2 * i) / Double(headSize))
            for position in 0..<maxPositions {
                let angle = Double(position) * inverseFrequency
                cosines[position * half + i] = Float(Foundation.cos(angle))
                sines[position * half + i] = Float(Foundation.sin(angle))
            }
        }
    }

    /// Rotates, in place, every head of `x` [batch, length, heads · headSize] by its position's
    /// angles; `inverse` rotates back, which is also the backward pass (the rotation is orthogonal,
    /// so dx = Rᵀ dy = R(−angle) dy).
    public func rotate(_ x: Tensor, heads: Int, inverse: Bool = false) {
        precondition(x.shape.count == 3 && x.shape[2] == heads * headSize, "RoPE: \(x.shape) is not [batch, length, \(heads) x \(headSize)]")
        precondition(x.shape[1] <= maxPositions, "RoPE: length \(x.shape[1]) beyond \(maxPositions) positions")
        let (batch, length, half) = (x.shape[0], x.shape[1], headSize / 2)
        let direction: Float = inverse ? -1 : 1
        Parallel.forEachPart(of: batch * length, minimumPerPart: 64) { positions in
            for index in positions {
                let t = index % length
                let cosRow = cosines.pointer + t * half
                let sinRow = sines.pointer + t * half
                let row = x.pointer + index * heads * headSize
                for h in 0..<heads {
                    let head = row + h * headSize
                    for i in 0..<half {
                        let (c, s) = (cosRow[i], direction * sinRow[i])
                        let (first, second) = (head[i], head[i + half])
                        head[i] = first * c - second * s
                        head[i + half] = second * c + first * s
                    }
                }
            }
        }
    }
}
