/// Vectorised float exponential for the element-wise kernels (softmax, SwiGLU, cross-entropy).
///
/// Cephes `expf`: n = round(x / ln 2), r = x − n·ln 2 (in two parts), e^r by a degree-7 polynomial
/// on |r| ≤ ln 2 / 2, times 2^n built in the exponent bits. Relative error against Foundation's
/// `exp` stays below 2.5e-7 over the clamped range (checked on a dense grid). Inputs are clamped to
/// [−87.33, 88.37]: below, the result is ~1e-38 rather than 0 or a subnormal; above, ~2.4e38
/// rather than infinity.
public enum FastMath {
    public typealias Vector = SIMD16<Float>

    @inlinable @inline(__always)
    public static func exp(_ x: Vector) -> Vector {
        // Compare-and-select: `clamped` and `pointwiseMin` go lane by lane (NaN rules) and do not vectorise.
        let (low, high) = (Vector(repeating: -87.33654), Vector(repeating: 88.37626))
        let clamped = x.replacing(with: low, where: x .< low).replacing(with: high, where: x .> high)
        // t = x / ln 2 + 1.5 · 2^23: its low mantissa bits hold round(x / ln 2) as an integer.
        let magic: Float = 12_582_912
        let t = clamped * 1.442_695_04 + magic
        let n = t - magic
        var r = clamped - n * 0.693_359_375
        r = r - n * -2.121_944_4e-4
        var p = Vector(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_59e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_12e-1
        p = p * (r * r) + r + 1
        let exponent = (unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
        return p * unsafeBitCast(exponent, to: Vector.self)
    }

    /// e^x of one float, by the same polynomial (for tails and tests).
    @inlinable @inline(__always)
    public static func exp(_ x: Float) -> Float {
        exp(Vector(repeating: x))[0]
    }

    @inlinable @inline(__always)
    public static func load(_ pointer: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self)
    }

    @inlinable @inline(__always)
    public static func store(_ value: Vector, _ pointer: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: Vector.self)
    }

    /// Lane-wise maximum by compare-and-select (vectorises; `pointwiseMax` does not).
    @inlinable @inline(__always)
    public static func maximum(_ a: Vector, _ b: Vector) -> Vector {
        a.replacing(with: b, where: b .> a)
    }

    /// The first `count` (< 16) floats at `pointer`, the other lanes `fill`.
    @inlinable @inline(__always)
    public static func loadPartial(_ pointer: UnsafePointer<Float>, count: Int, fill: Float) -> Vector {
        var value = Vector(repeating: fill)
        for i in 0..<count { value[i] = pointer[i] }
        return value
    }

    @inlinable @inline(__always)
    public static func storePartial(_ value: Vector, _ pointer: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { pointer[i] = value[i] }
    }

    /// `count` (at most 16) floats at `pointer`, the other lanes `fill`: full vectors
    /// in a row's body and its shorter last stretch alike.
    @inlinable @inline(__always)
    public static func load(_ pointer: UnsafePointer<Float>, count: Int, fill: Float = 0) -> Vector {
        count == Vector.scalarCount ? load(pointer) : loadPartial(pointer, count: count, fill: fill)
    }

    /// The first `count` (at most 16) lanes of `value` to `pointer`.
    @inlinable @inline(__always)
    public static func store(_ value: Vector, _ pointer: UnsafeMutablePointer<Float>, count: Int) {
        if count == Vector.scalarCount { store(value, pointer) } else { storePartial(value, pointer, count: count) }
    }
}
