import Foundation
import Models
import Pipeline
import Schedules
import Tensor
import Training
import XCTest

/// TwoBP's own intra-op parallelism (`Parallel`) must not change what is computed: every output
/// element is computed by one thread in the one-thread order, so a run's losses do not depend on
/// the thread count beyond float rounding.
final class ThreadCountTests: XCTestCase {
    override func tearDown() {
        Parallel.setThreads(1)
        super.tearDown()
    }

    func losses(threads: Int, folder: URL) throws -> [Double] {
        Parallel.setThreads(threads)
        let corpus = folder.appendingPathComponent("corpus.txt")
        try Data(String(repeating: "Now is the winter of our discontent made glorious summer. ", count: 200).utf8).write(to: corpus)
        // 8 × 64 tokens: MLP products above the split threshold, several attention groups, norms
        // and the loss over enough rows to be split.
        let settings = TrainingSettings(
            model: try LlamaConfig.resolve("llama-tiny"), data: corpus, steps: 3, batchSize: 8, sampleLength: 64,
            learningRate: 3e-3, warmupSteps: 0, seed: 4, evaluateEvery: nil, validationBatches: 1,
            pipeline: ScheduleRequest(kind: .naive, ranks: 1), showProgress: false)
        let outcome = try RankLauncher.run(.threads, ranks: 1, receiveTimeout: 60) { transport in
            try Trainer(settings: settings, transport: transport).run()
        }
        return try XCTUnwrap(outcome).losses
    }

    func testThreeStepLossesDoNotDependOnTheThreadCount() throws {
        let folder = try temporaryFolder(self)
        let one = try losses(threads: 1, folder: folder)
        let two = try losses(threads: 2, folder: folder)
        let three = try losses(threads: 3, folder: folder)
        XCTAssertEqual(one.count, 3)
        for other in [two, three] {
            XCTAssertEqual(other.count, one.count)
            for (a, b) in zip(one, other) {
                XCTAssertLessThan(abs(a - b) / abs(a), 1e-5, "losses \(one) with one thread, \(other) with more")
            }
        }
        XCTAssertNotEqual(one[0], one[2], "the run must train")
    }

    func testASplitProductMatchesTheOneThreadProduct() {
        var generator = SeededGenerator(seed: 3)
        // 300 × 200 × 160: above the split threshold, rows not a multiple of any kernel's tile.
        for (transposeA, transposeB) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = Tensor(zeros: transposeA ? [160, 300] : [300, 160])
            let b = Tensor(zeros: transposeB ? [200, 160] : [160, 200])
            a.fillNormal(std: 1, using: &generator)
            b.fillNormal(std: 1, using: &generator)
            let (one, two) = (Tensor(zeros: [300, 200]), Tensor(zeros: [300, 200]))
            Parallel.setThreads(1)
            BLAS.matmul(one, a, transposeA: transposeA, b, transposeB: transposeB)
            Parallel.setThreads(2)
            BLAS.matmul(two, a, transposeA: transposeA, b, transposeB: transposeB)
            let scale = one.toArray().map(abs).max() ?? 0
            let difference = zip(one.toArray(), two.toArray()).map { abs($0 - $1) }.max() ?? 0
            XCTAssertGreaterThan(scale, 1)
            XCTAssertLessThanOrEqual(difference, 1e-6 * scale, "transposeA \(transposeA), transposeB \(transposeB)")
        }
        // Wide and short: split by columns.
        let (a, b) = (Tensor(zeros: [20, 512]), Tensor(zeros: [512, 1000]))
        a.fillNormal(std: 1, using: &generator)
        b.fillNormal(std: 1, using: &generator)
        let (one, two) = (Tensor(zeros: [20, 1000]), Tensor(zeros: [20, 1000]))
        Parallel.setThreads(1)
        BLAS.matmul(one, a, b)
        Parallel.setThreads(2)
        BLAS.matmul(two, a, b)
        let scale = one.toArray().map(abs).max() ?? 0
        XCTAssertLessThanOrEqual(zip(one.toArray(), two.toArray()).map { abs($0 - $1) }.max() ?? 0, 1e-6 * scale)
    }
}
