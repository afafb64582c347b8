import Foundation
@testable import Training
import XCTest

final class MetricsTests: XCTestCase {
    func lines(_ url: URL) throws -> [String] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    }

    func record(_ step: Int, loss: Double, learningRate: Double = 0.1, throughput: Double = 1, extra: [(String, Double)] = [],
                gradientNorm: Double? = nil) -> StepRecord {
        StepRecord(step: step, learningRate: learningRate, throughput: throughput, unit: .tokens(perSequence: 16),
                   terms: [("loss", loss)] + extra, gradientNorm: gradientNorm)
    }

    struct Line: Decodable, Equatable {
        let step: Int
        let loss: Double?
    }

    func testJSONLinesOneObjectPerStep() throws {
        let url = try temporaryFolder(self).appendingPathComponent("run/metrics.jsonl")
        let log = try MetricsLog(url: url)
        try log.log(record(1, loss: 5.5, learningRate: 3e-4, throughput: 1234.5))
        try log.log(record(2, loss: .nan, learningRate: 1e-05, throughput: 99, extra: [("mlm_loss", 4.0)], gradientNorm: 0.75))
        try log.close()
        let written = try lines(url)
        XCTAssertEqual(written, [
            #"{"loss":5.5,"lr":0.0003,"step":1,"tokens_per_second":1234.5}"#,
            #"{"grad_norm":0.75,"loss":null,"lr":1e-05,"mlm_loss":4,"step":2,"tokens_per_second":99}"#,
            "",
        ])
        XCTAssertEqual(try written.dropLast().map { try JSONDecoder().decode(Line.self, from: Data($0.utf8)) },
                       [Line(step: 1, loss: 5.5), Line(step: 2, loss: nil)])
    }

    func testResumingDropsStepsAfterTheCheckpointAndATornLine() throws {
        let url = try temporaryFolder(self).appendingPathComponent("metrics.jsonl")
        let first = try MetricsLog(url: url)
        for step in 1...5 { try first.log(record(step, loss: Double(step))) }
        try first.close()
        try (String(contentsOf: url, encoding: .utf8) + #"{"step":6,"lo"#).write(to: url, atomically: true, encoding: .utf8)

        let resumed = try MetricsLog(url: url, resumingAfter: 3)
        try resumed.log(record(4, loss: 40))
        try resumed.close()
        let records = try lines(url).dropLast().map { try JSONDecoder().decode(Line.self, from: Data($0.utf8)) }
        XCTAssertEqual(records.map(\.step), [1, 2, 3, 4])
        XCTAssertEqual(records[3].loss, 40)
        // Without resumingAfter the file starts over.
        try MetricsLog(url: url).close()
        XCTAssertEqual(try Data(contentsOf: url).count, 0)
    }
}

final class ProgressReporterTests: XCTestCase {
    final class Capture {
        var text = ""
        var now = 100.0
    }

    func testPlainModePrintsWholeLinesWithETA() {
        let capture = Capture()
        let reporter = ProgressReporter(totalSteps: 100, interactive: false, plainEvery: 10,
                                        output: { capture.text += $0 }, clock: { capture.now })
        for step in 51...100 {
            reporter.update(step: step, loss: 2.0, throughput: 1000, learningRate: 1e-4)
            capture.now += 2
        }
        reporter.message("saved step-100")
        let lines = capture.text.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 6, capture.text)
        XCTAssertEqual(lines[0], "step  60/100 | loss 2.0000 | lr 1.00e-04 | 1000 tok/s | ETA 1:20")
        XCTAssertEqual(lines[4], "step 100/100 | loss 2.0000 | lr 1.00e-04 | 1000 tok/s | ETA 0:00")
        XCTAssertEqual(lines[5], "saved step-100")
        XCTAssertFalse(capture.text.contains("\r"))
    }

    func testInteractiveModeRedrawsOneLine() {
        let capture = Capture()
        let reporter = ProgressReporter(totalSteps: 3, interactive: true, output: { capture.text += $0 }, clock: { capture.now })
        reporter.update(step: 1, loss: 3, throughput: 10)
        capture.now += 3600
        reporter.update(step: 2, loss: 2.5, throughput: 10)
        reporter.message("validation loss 2.4")
        reporter.update(step: 3, loss: 2, throughput: 10)
        XCTAssertEqual(capture.text,
                       "\rstep 1/3 | loss 3.0000 | 10 tok/s | ETA --:--\u{1B}[K" +
                       "\rstep 2/3 | loss 2.5000 | 10 tok/s | ETA 1:00:00\u{1B}[K" +
                       "\r\u{1B}[Kvalidation loss 2.4\n" +
                       "\rstep 3/3 | loss 2.0000 | 10 tok/s | ETA 0:00\u{1B}[K\n")
        reporter.finish()
        XCTAssertTrue(capture.text.hasSuffix("K\n"), "finish after the last step adds nothing")
    }

    func testDurationFormat() {
        XCTAssertEqual(ProgressReporter.formatDuration(59.6), "1:00")
        XCTAssertEqual(ProgressReporter.formatDuration(3725), "1:02:05")
        XCTAssertEqual(ProgressReporter.formatDuration(.infinity), "--:--")
    }
}
