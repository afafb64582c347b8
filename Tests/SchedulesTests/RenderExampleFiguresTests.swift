import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest
@testable import Schedules

/// The example figures under docs/figures, from equal costs F = I = W = 1 per
/// micro-batch on 4 ranks, free communication: the 2BP paper's Figure 1 set
/// (naive, GPipe, 1F1B-1, 1F1B-2, each without and with 2BP) and the Zero
/// Bubble schedules next to `auto`.
enum ExampleFigures {
    static let ranks = 4
    static let costs = HandBuilt.equalCosts

    /// name of the file (without .svg), title, panels.
    static func figures() throws -> [(name: String, title: String, panels: [TimelinePanel])] {
        func panels(_ kinds: [ScheduleKind], costs: (ScheduleKind) -> CostModel) throws -> [TimelinePanel] {
            try kinds.flatMap { kind in
                try [false, true].map { twoBP in
                    let schedule = try Schedule.make(kind: kind, ranks: ranks, twoBP: twoBP)
                    let label = "\(schedule.name), \(schedule.microBatches) micro-batch\(schedule.microBatches == 1 ? "" : "es")"
                    return TimelinePanel(label: label, timeline: try Simulator.simulate(schedule, costs: costs(kind)))
                }
            }
        }
        // Naive runs the batch of GPipe's N micro-batches as one, so each of its passes costs N.
        let wholeBatch = CostModel.uniform(forward: Double(ranks), backwardInput: Double(ranks), backwardWeight: Double(ranks))
        let naiveAndGPipe = try panels([.naive, .gpipe]) { $0 == .naive ? wholeBatch : costs }
        let oneFOneB = try panels([.oneFOneB1, .oneFOneB2]) { _ in costs }
        let microBatches = 2 * ranks
        var zeroBubble = try [ScheduleKind.zeroBubbleH1, .zeroBubbleH2, .zeroBubbleV].map { kind in
            let schedule = try Schedule.make(kind: kind, ranks: ranks, microBatches: microBatches)
            // A rank holds the same share of the model however many chunks it is cut into.
            let share = 1 / Double(schedule.chunksPerRank)
            let chunkCosts = CostModel.uniform(forward: share, backwardInput: share, backwardWeight: share)
            return TimelinePanel(label: schedule.name, timeline: try Simulator.simulate(schedule, costs: chunkCosts))
        }
        let auto = try AutoSchedule.build(ranks: ranks, microBatches: microBatches, costs: costs)
        zeroBubble.append(TimelinePanel(label: "auto", timeline: auto.timeline))
        let setting = "\(ranks) ranks, F = I = W = 1 per micro-batch"
        return [
            ("naive-gpipe", "naive and GPipe, without and with 2BP (\(setting); naive: one micro-batch of 4)", naiveAndGPipe),
            ("1f1b", "1F1B-1 and 1F1B-2, without and with 2BP (\(setting))", oneFOneB),
            ("zero-bubble-auto", "Zero Bubble H1, H2, V and auto, \(microBatches) micro-batches (\(setting); zb-v: 1/2 per chunk)", zeroBubble),
        ]
    }

    static func write(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for figure in try figures() {
            let svg = TimelineSVG.renderStacked(figure.panels, title: figure.title)
            try svg.write(to: directory.appendingPathComponent("\(figure.name).svg"), atomically: true, encoding: .utf8)
        }
    }
}

final class RenderExampleFiguresTests: XCTestCase {
    /// The example figures draw, one panel per schedule, as well-formed SVG;
    /// with TWOBP_FIGURES set to a directory they are (re)written there:
    /// `TWOBP_FIGURES=docs/figures swift test --filter RenderExampleFiguresTests`.
    func testExampleFiguresDrawAndAreWrittenWhenAsked() throws {
        let figures = try ExampleFigures.figures()
        XCTAssertEqual(figures.map(\.panels.count), [4, 4, 4])
        for figure in figures {
            let svg = TimelineSVG.renderStacked(figure.panels, title: figure.title)
            XCTAssertTrue(XMLParser(data: Data(svg.utf8)).parse(), figure.name)
        }
        if let directory = ProcessInfo.processInfo.environment["TWOBP_FIGURES"] {
            try ExampleFigures.write(to: URL(fileURLWithPath: directory))
        }
    }
}
