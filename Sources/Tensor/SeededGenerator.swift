import Foundation

/// A small, fast, seedable generator (SplitMix64) so that every run with the same seed
/// initialises and samples identically on every platform and transport.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    public mutating func nextUniform() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    /// Standard normal by Box-Muller.
    public mutating func nextNormal() -> Double {
        let u1 = Swift.max(nextUniform(), .leastNonzeroMagnitude)
        let u2 = nextUniform()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}

extension Tensor {
    /// Fills with normal samples of standard deviation `std`.
    public func fillNormal(std: Float, using generator: inout SeededGenerator) {
        for i in 0..<count { pointer[i] = Float(generator.nextNormal()) * std }
    }

    /// Fills with uniform samples in [-bound, bound).
    public func fillUniform(bound: Float, using generator: inout SeededGenerator) {
        for i in 0..<count { pointer[i] = Float(generator.nextUniform() * 2 - 1) * bound }
    }
}
