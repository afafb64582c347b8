import Foundation
import Layers
import Tensor
import XCTest

// Shared by LayersTests and ModelsTests (Tests/ModelsTests/TestSupport.swift is a symlink).

/// The seed of randomised tests: fixed so failures reproduce; set TWOBP_TEST_SEED to draw fresh shapes and values.
let testSeed: UInt64 = ProcessInfo.processInfo.environment["TWOBP_TEST_SEED"].flatMap { UInt64($0) } ?? 240_518_047

func makeGenerator(_ salt: UInt64) -> SeededGenerator {
    SeededGenerator(seed: testSeed &* 0x9E37_79B9_7F4A_7C15 ^ salt)
}

extension SeededGenerator {
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
}

func randomTensor(_ shape: [Int], std: Float = 1, _ generator: inout SeededGenerator) -> Tensor {
    let tensor = Tensor(zeros: shape)
    tensor.fillNormal(std: std, using: &generator)
    return tensor
}

func randomTokens(_ count: Int, vocabulary: Int, _ generator: inout SeededGenerator) -> [Int32] {
    (0..<count).map { _ in Int32(generator.int(0...(vocabulary - 1))) }
}

/// Matrices ~ N(0, std²); 1-D gains ~ 1 + N(0, 0.2²), so that a wrong gain gradient shows.
func randomize(_ parameters: [Parameter], std: Float, _ generator: inout SeededGenerator) {
    for parameter in parameters {
        if parameter.value.shape.count == 1 {
            parameter.value.fillNormal(std: 0.2, using: &generator)
            for i in 0..<parameter.value.count { parameter.value[i] += 1 }
        } else {
            parameter.value.fillNormal(std: std, using: &generator)
        }
    }
}

func doubles(_ tensor: Tensor) -> [Double] { tensor.toArray().map(Double.init) }

/// Parameter values as Double, by name.
func doubleValues(_ parameters: [Parameter]) -> [String: [Double]] {
    Dictionary(uniqueKeysWithValues: parameters.map { ($0.name, doubles($0.value)) })
}

/// ‖a − b‖₂ / ‖b‖₂ (infinite when b is zero and a is not, so a vanished reference cannot pass).
func relativeError(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    let difference = zip(a, b).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
    let norm = b.reduce(0) { $0 + $1 * $1 }.squareRoot()
    return norm == 0 ? (difference == 0 ? 0 : .infinity) : difference / norm
}

/// Tolerance of Float analytic gradients against Double central differences, as a fraction of the
/// gradient's norm. Float rounding (ε ≈ 6e-8) through the short reductions, softmax and rsqrt of
/// these shapes leaves 1e-8 ... 1e-6 relative error (measured over many seeds); central differences
/// in Double with step 1e-5 are exact to ~1e-9. A wrong formula, sign, transpose, head offset or RoPE
/// convention is off by O(1) (a wrong inverse-RoPE sign measured 0.1 ... 1.7). 1e-4 sits two orders
/// from both sides.
let gradientTolerance = 1e-4

/// Tolerance of the Float forward against the Double reference, relative to the output's norm
/// (measured 3e-8 ... 2e-7).
let forwardTolerance = 1e-5

/// Coordinates to difference in a tensor of `count` values: all of them when few, else a random sample.
func sampleCoordinates(_ count: Int, limit: Int, _ generator: inout SeededGenerator) -> [Int] {
    guard count > limit else { return Array(0..<count) }
    var all = Array(0..<count)
    all.shuffle(using: &generator)
    return Array(all.prefix(limit)).sorted()
}

/// Central differences of `loss` with respect to `variables[name][i]` for each coordinate i.
func centralDifferences(
    _ loss: ([String: [Double]]) -> Double, at variables: [String: [Double]], name: String, coordinates: [Int],
    step: Double = 1e-5
) -> [Double] {
    coordinates.map { i in
        var plus = variables, minus = variables
        plus[name]![i] += step
        minus[name]![i] -= step
        return (loss(plus) - loss(minus)) / (2 * step)
    }
}

/// Checks each named analytic gradient (Float) against central differences of the Double `loss`
/// on (a sample of) its coordinates, or on `chosenCoordinates[name]` where given; returns the worst
/// relative error seen.
@discardableResult
func checkGradients(
    analytic: [String: [Float]], loss: ([String: [Double]]) -> Double, at variables: [String: [Double]],
    coordinatesPerTensor: Int = 48, chosenCoordinates: [String: [Int]] = [:], _ generator: inout SeededGenerator, _ context: String,
    file: StaticString = #filePath, line: UInt = #line
) -> Double {
    var worst = 0.0
    for name in analytic.keys.sorted() {
        let gradient = analytic[name]!
        let coordinates = chosenCoordinates[name] ?? sampleCoordinates(gradient.count, limit: coordinatesPerTensor, &generator)
        let expected = centralDifferences(loss, at: variables, name: name, coordinates: coordinates)
        let error = relativeError(coordinates.map { Double(gradient[$0]) }, expected)
        worst = max(worst, error)
        XCTAssertLessThan(error, gradientTolerance, "\(context): d loss / d \(name) vs central differences", file: file, line: line)
        XCTAssertGreaterThan(expected.map(abs).max() ?? 0, 0, "\(context): d loss / d \(name) is all zero on the sampled coordinates",
                             file: file, line: line)
    }
    return worst
}

func assertThrowsTwoBPError<T>(_ expression: @autoclosure () throws -> T, _ message: String,
                               file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try expression(), message, file: file, line: line) { error in
        XCTAssertTrue(error is TwoBPError, "\(message): threw \(type(of: error)), not TwoBPError", file: file, line: line)
    }
}
