import ArgumentParser
import Files
import Foundation
import Schedules
import Tensor

/// `twobp schedule`: one schedule's actions, its simulated timeline, and pictures of it.
struct ScheduleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule",
        abstract: "Print a pipeline schedule and its simulated step: time, bubble and peak memory per rank.",
        discussion: """
            Prints the schedule's text form (one line per rank), then simulates it with --costs: equal \
            F = I = W = 1 per micro-batch and free communication by default, or a string such as \
            F=1,I=1,W=1,latency=0.1 (keys: F I W B latency bandwidth bytes act stash static limit efficiency), \
            or a cost model JSON file (what `twobp profile` writes). Uniform costs are per rank: a schedule \
            with v chunks per rank gives each chunk 1/v of them. --schedule auto builds a 2BP schedule for the \
            costs and --memory-limit. --figure1 PATH draws the 2BP paper's Figure 1 set (naive, GPipe, 1F1B-1, \
            1F1B-2, each without and with 2BP) stacked in one SVG; naive runs GPipe's batch as one micro-batch, \
            so its passes cost M times a micro-batch.
            """)

    @Option(help: "Schedule: naive, gpipe, 1f1b-1, 1f1b-2, interleaved, zb-h1, zb-h2, zb-v, or auto.")
    var schedule = "1f1b-1"

    @Option(parsing: .unconditional, help: "Pipeline stages (ranks).")
    var stages = 4

    @Option(name: .customLong("micro-batches"), parsing: .unconditional, help: "Micro-batches per step (default: the schedule's, e.g. S for 1f1b-1, 2S for 1f1b-2 and auto).")
    var microBatches: Int?

    @Flag(name: .customLong("2bp"), help: "Split backward: send p1 at once, defer p2 (2BP). auto is always 2BP.")
    var twoBP = false

    @Option(parsing: .unconditional, help: "Model chunks per rank for interleaved (default 2) and zb-v (2).")
    var chunks: Int?

    @Option(help: "Costs: F=1,I=1,W=1 style string, or a cost model JSON file (default: F=1,I=1,W=1, free communication).")
    var costs: String?

    @Option(name: .customLong("memory-limit"), help: "Bytes per rank for auto (e.g. 80GiB); also marks ranks over it.")
    var memoryLimit: String?

    @Option(help: "Write the simulated timeline as SVG to this file.")
    var svg: String?

    @Option(help: "Write step_time, bubble_ratio and peak_memory per rank, the schedule text and the timeline as JSON.")
    var json: String?

    @Option(help: "Write the timeline as Chrome trace JSON (chrome://tracing, Perfetto).")
    var trace: String?

    @Flag(help: "Print only the schedule's text form.")
    var text = false

    @Option(help: "Draw the paper's Figure 1 (8 schedules stacked, with --stages and --costs) into this SVG and exit.")
    var figure1: String?

    func run() throws {
        try PlanInputs.checkStages(stages)
        if let microBatches, microBatches < 1 { throw TwoBPError("--micro-batches must be at least 1, got \(microBatches)") }
        if let chunks, chunks < 1 { throw TwoBPError("--chunks must be at least 1, got \(chunks)") }
        let costModel = try PlanInputs.costModel(costs)
        let limit = try memoryLimit.map(PlanInputs.bytes)
        if let figure1 {
            try writeFigure1(costs: costModel, to: figure1)
            return
        }
        let choice = try PlanInputs.Choice(name: schedule)
        let (built, timeline) = try simulate(choice, costs: costModel, memoryLimit: limit)
        print(built.text, terminator: "")
        guard !text else { return }
        report(built, timeline, memoryLimit: limit ?? costModel.memoryLimit)
        if let svg {
            try FileIO.writeOutput(URL(fileURLWithPath: svg), what: "--svg", text: TimelineSVG.render(timeline, title: title(built)))
        }
        if let trace {
            try FileIO.writeOutput(URL(fileURLWithPath: trace), what: "--trace", text: ChromeTrace.render(timeline, name: built.name))
        }
        try writeJSON(ScheduleSummary(schedule: built.name, ranks: built.ranks, microBatches: built.microBatches,
                                      chunksPerRank: built.chunksPerRank, stepTime: timeline.stepTime,
                                      bubbleRatio: (0..<built.ranks).map(timeline.bubbleRatio(rank:)),
                                      meanBubbleRatio: timeline.meanBubbleRatio,
                                      peakMemory: timeline.peakMemory ?? [], text: built.text, timeline: timeline),
                      to: json)
    }

    private func title(_ schedule: Schedule) -> String {
        "\(schedule.name), \(schedule.ranks) ranks, \(schedule.microBatches) micro-batch\(schedule.microBatches == 1 ? "" : "es")"
    }

    /// The schedule (lowered when communication costs time, so transfers are drawn) and its simulation.
    private func simulate(_ choice: PlanInputs.Choice, costs: CostModel, memoryLimit: Int?) throws -> (Schedule, Timeline) {
        switch choice {
        case .auto:
            if chunks.map({ $0 != 1 }) ?? false { throw TwoBPError("auto builds one chunk per rank, got --chunks \(chunks!)") }
            let result = try AutoSchedule.build(ranks: stages, microBatches: microBatches ?? 2 * stages, costs: costs,
                                                memoryLimit: memoryLimit)
            return (result.schedule, result.timeline)
        case let .kind(kind):
            var schedule = try Schedule.make(kind: kind, ranks: stages, microBatches: microBatches, twoBP: twoBP, chunksPerRank: chunks)
            let lowered = schedule.lowered()
            try ScheduleValidator.validate(lowered)
            let model = PlanInputs.perChunk(costs, chunksPerRank: schedule.chunksPerRank)
            if model.transferTime > 0 { schedule = lowered }
            return (schedule, try Simulator.simulate(schedule, costs: model))
        }
    }

    private func report(_ schedule: Schedule, _ timeline: Timeline, memoryLimit: Int?) {
        print("")
        print(String(format: "step time %.6g s, mean bubble %.1f%%", timeline.stepTime, 100 * timeline.meanBubbleRatio))
        for rank in 0..<schedule.ranks {
            let peak = timeline.peakMemory?[rank] ?? 0
            let over = memoryLimit.map { peak > $0 ? "  OVER LIMIT" : "" } ?? ""
            print(String(format: "  rank %d: bubble %5.1f%%, peak memory %@%@", rank, 100 * timeline.bubbleRatio(rank: rank),
                         RenderStyle.bytes(peak) as NSString, over as NSString))
        }
        print("")
        print(TimelineText.render(timeline, title: title(schedule)))
    }

    /// naive, GPipe, 1F1B-1, 1F1B-2, each without and with 2BP, on one time axis.
    private func writeFigure1(costs: CostModel, to path: String) throws {
        let panels = try Self.figure1Panels(ranks: stages, costs: costs)
        let title = "2BP paper Figure 1: \(stages) ranks, "
            + (self.costs.map { "costs \($0)" } ?? "F = I = W = 1 per micro-batch") + "; naive: GPipe's batch as one micro-batch"
        try FileIO.writeOutput(URL(fileURLWithPath: path), what: "--figure1", text: TimelineSVG.renderStacked(panels, title: title))
        for panel in panels {
            print(String(format: "%-32@ step %8.4g  bubble %5.1f%%", panel.label as NSString, panel.timeline.stepTime,
                         100 * panel.timeline.meanBubbleRatio))
        }
        print("wrote \(path)")
    }

    static func figure1Panels(ranks: Int, costs: CostModel) throws -> [TimelinePanel] {
        try [ScheduleKind.naive, .gpipe, .oneFOneB1, .oneFOneB2].flatMap { kind in
            try [false, true].map { twoBP in
                let schedule = try Schedule.make(kind: kind, ranks: ranks, twoBP: twoBP)
                let scale = kind == .naive ? Double(ScheduleKind.gpipe.defaultMicroBatches(ranks: ranks)) : 1
                let model = costs.scaled(time: scale, memory: scale)
                let label = "\(schedule.name) (\(schedule.microBatches) micro-batch\(schedule.microBatches == 1 ? " of \(Int(scale))" : "es"))"
                return TimelinePanel(label: label, timeline: try Simulator.simulate(schedule, costs: model))
            }
        }
    }
}

/// What `twobp schedule --json` writes (keys in snake case).
struct ScheduleSummary: Encodable {
    var schedule: String
    var ranks: Int
    var microBatches: Int
    var chunksPerRank: Int
    var stepTime: Double
    var bubbleRatio: [Double]
    var meanBubbleRatio: Double
    var peakMemory: [Int]
    var text: String
    var timeline: Timeline
}
