import Tensor
import XCTest

final class TensorTests: XCTestCase {
    func testMatmulMatchesDoubleReferenceForEveryTransposeCombination() {
        var generator = SeededGenerator(seed: 7)
        let (m, n, k) = (5, 7, 3)
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                let a = Tensor(zeros: transposeA ? [k, m] : [m, k])
                let b = Tensor(zeros: transposeB ? [n, k] : [k, n])
                a.fillNormal(std: 1, using: &generator)
                b.fillNormal(std: 1, using: &generator)
                let c = Tensor(zeros: [m, n])
                c.fillNormal(std: 1, using: &generator)
                let before = c.toArray()
                BLAS.matmul(c, a, transposeA: transposeA, b, transposeB: transposeB, accumulate: true)
                for i in 0..<m {
                    for j in 0..<n {
                        var expected = Double(before[i * n + j])
                        for p in 0..<k {
                            let aValue = transposeA ? a[p * m + i] : a[i * k + p]
                            let bValue = transposeB ? b[j * k + p] : b[p * n + j]
                            expected += Double(aValue) * Double(bValue)
                        }
                        XCTAssertEqual(Double(c[i * n + j]), expected, accuracy: 1e-5, "transposeA \(transposeA) transposeB \(transposeB)")
                    }
                }
            }
        }
    }

    func testMemoryMeterTracksLiveAndPeakBytesOfItsThread() {
        let meter = MemoryMeter(name: "test")
        MemoryMeter.withCurrent(meter) {
            var first: Tensor? = Tensor(zeros: [10, 10])
            let second = Tensor(zeros: [5])
            XCTAssertEqual(meter.liveBytes, 420)
            first = nil
            XCTAssertNil(first)
            XCTAssertEqual(meter.liveBytes, 20)
            XCTAssertEqual(meter.peakBytes, 420)
            let view = second.reshaped([1, 5])
            XCTAssertEqual(meter.liveBytes, 20, "views share storage and cost nothing")
            XCTAssertEqual(view.shape, [1, 5])
        }
        XCTAssertEqual(meter.liveBytes, 0, "tensors are credited back when freed")
        XCTAssertEqual(meter.peakBytes, 420)
        meter.resetPeak()
        XCTAssertEqual(meter.peakBytes, 0)
    }

    func testRowViewsWriteThroughToTheirBase() {
        let joined = Tensor(shape: [3, 3], values: [1, 2, 3, 4, 5, 6, 7, 8, 9])
        XCTAssertEqual(joined.rows(1..<3).toArray(), [4, 5, 6, 7, 8, 9])
        joined.rows(2..<3)[0] = 0
        XCTAssertEqual(joined[6], 0, "row views write through to their base")
    }

    func testSeededGeneratorIsReproducibleAndRoughlyNormal() {
        var first = SeededGenerator(seed: 42)
        var second = SeededGenerator(seed: 42)
        let samples = (0..<20000).map { _ in first.nextNormal() }
        XCTAssertEqual(samples[0..<5].map { $0 }, (0..<5).map { _ in second.nextNormal() })
        let mean = samples.reduce(0, +) / Double(samples.count)
        let variance = samples.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(samples.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
    }
}
