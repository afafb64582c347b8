import ArgumentParser
import Benchmarks
import Checkpoints
import Data
import Files
import Foundation
import Models
import Schedules
import Tensor
import Training
/// `twobp profile`: a cost model measured on the real model on this machine.
struct ProfileCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Measure F, p1, p2 and W* times and memory per stage; write a cost model JSON.",
        discussion: """
            Builds each virtual stage of the balanced partition --schedule would run on --stages ranks, \
            one thread per rank measuring at the same time, with one BLAS thread each (as the pipeline's \
            stages run), and times forward, p1 and p2 of one \
            micro-batch (--batch-size / M sequences) and p2 concatenated over k = 1, 2, 4, ..., M micro-batches \
            (W*); the median of --repeats runs after a warm-up. Memory from the stage's MemoryMeter: \
            activation bytes kept from F to p1, stash bytes kept from p1 to p2, static = 4 × parameters × 4 B \
            (fp32 weights, gradients, AdamW m and v); message bytes = micro-batch × seq-len × hidden × 4. \
            The JSON is what `schedule --costs` and `plan --costs` read.
            --compare then runs --schedule, without and with 2BP, as a real thread pipeline and compares the \
            measured step times with the simulated ones (--svg draws both timelines stacked).
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(parsing: .unconditional, help: "Pipeline stages (ranks).")
    var stages = 2

    @Option(help: "Schedule whose partition is measured (and run by --compare).")
    var schedule = "1f1b-1"

    @Option(parsing: .unconditional, help: "Model chunks per rank (interleaved, zb-v).")
    var chunks: Int?

    @Option(name: .customLong("micro-batches"), parsing: .unconditional, help: "Micro-batches per step (default: the schedule's).")
    var microBatches: Int?

    @Option(name: .customLong("batch-size"), parsing: .unconditional, help: "Sequences per step (default: 2 per micro-batch).")
    var batchSize: Int?

    @Option(parsing: .unconditional, help: "Measurements per figure; the median is kept.")
    var repeats = 3

    @Option(help: "Write the cost model JSON to this file.")
    var json: String?

    @Flag(help: "Also run the schedule without and with 2BP on threads and compare measured with simulated step times.")
    var compare = false

    @Option(parsing: .unconditional, help: "With --compare: measured steps per schedule (after one warm-up).")
    var steps = 3

    @Option(help: "With --compare: write measured and simulated timelines stacked as SVG.")
    var svg: String?

    @Option(name: .customLong("compare-json"), help: "With --compare: write the comparison as JSON.")
    var compareJSON: String?

    func validate() throws {
        guard compare || (svg == nil && compareJSON == nil) else {
            throw ValidationError("--\(svg != nil ? "svg" : "compare-json") draws the --compare run; add --compare")
        }
    }

    func run() throws {
        try PlanInputs.checkStages(stages)
        guard repeats >= 1, steps >= 1 else { throw TwoBPError("--repeats and --steps must be at least 1") }
        let kind = try ScheduleKind(name: schedule)
        let (config, sequenceLength) = try modelOptions.resolve()
        let request = ScheduleRequest(kind: kind, ranks: stages, microBatches: microBatches, twoBP: false, chunksPerRank: chunks)
        let shape = try request.resolved()
        let batch = batchSize ?? 2 * shape.microBatches
        guard batch >= shape.microBatches else {
            throw TwoBPError("--batch-size \(batch) cannot be split into \(shape.microBatches) micro-batches")
        }
        try MemoryEstimate.training(model: config, request: request, batchSize: batch, sampleLength: sequenceLength,
                                    allRanksInProcess: true, keepsWholeModel: false)
            .check(limit: nil, command: "profile")
        Parallel.setThreads(1)
        let result = try Profiler.run(Profiler.Settings(model: config, modelName: modelOptions.model, request: request,
                                                        batchSize: batch, sampleLength: sequenceLength,
                                                        repeats: repeats, seed: modelOptions.seed))
        print("\(modelOptions.model): \(result.stages.count) virtual stages of \(request.kind) on \(stages) ranks, "
            + "micro-batch \(result.microBatchSize) × \(sequenceLength), M = \(result.microBatches), "
            + "OpenBLAS \(result.blasCore), 1 thread, median of \(repeats)")
        for stage in result.stages {
            let table = stage.concatenated.sorted { $0.key < $1.key }
                .map { String(format: "k=%d %.2f (%.2f)", $0.key, $0.value * 1e3, (stage.separate[$0.key] ?? 0) * 1e3) }
                .joined(separator: ", ")
            print(String(format: "  stage %d (units %d..<%d, %d params): F %.2f ms, p1 %.2f ms, p2 %.2f ms; W* ms (k single W): %@",
                         stage.stage, stage.firstUnit, stage.endUnit, stage.parameters,
                         stage.forward * 1e3, stage.backwardInput * 1e3, stage.backwardWeight * 1e3, table as NSString))
            print("      activations \(RenderStyle.bytes(stage.activationBytes)), stash \(RenderStyle.bytes(stage.stashBytes)), "
                + "static \(RenderStyle.bytes(stage.staticBytes)), message \(RenderStyle.bytes(result.costs.messageBytes))")
        }
        if let json {
            try FileIO.writeOutput(URL(fileURLWithPath: json), what: "--json", data: result.jsonData())
            print("wrote \(json)")
        }
        if compare { try runComparison(config: config, sequenceLength: sequenceLength, batch: batch, costs: result.costs) }
    }

    private func runComparison(config: any ModelConfig, sequenceLength: Int, batch: Int, costs: CostModel) throws {
        var panels: [TimelinePanel] = []
        var results: [ProfilerComparison.Result] = []
        let kind = try ScheduleKind(name: schedule)
        for twoBP in [false, true] {
            let request = ScheduleRequest(kind: kind, ranks: stages, microBatches: microBatches, twoBP: twoBP, chunksPerRank: chunks)
            let result = try ProfilerComparison.run(model: config, request: request, batchSize: batch, sampleLength: sequenceLength,
                                                    costs: costs, steps: steps, seed: modelOptions.seed)
            results.append(result)
            let stepList = result.measuredStepTimes.map { String(format: "%.2f", $0 * 1e3) }.joined(separator: " ")
            let measuredMs = result.measuredStepTime * 1e3, simulatedMs = result.simulatedStepTime * 1e3
            print("\(result.schedule): measured \(String(format: "%.2f", measuredMs)) ms (steps \(stepList)), "
                + "simulated \(String(format: "%.2f", simulatedMs)) ms, error \(String(format: "%+.1f", 100 * result.relativeError))%")
            print("    simulated from this run's own action times: \(String(format: "%.2f", result.inRunSimulatedStepTime * 1e3)) ms, "
                + "error \(String(format: "%+.1f", 100 * result.inRunRelativeError))%")
            print("    bubble measured " + result.measuredBubbleRatio.map { String(format: "%.1f%%", 100 * $0) }.joined(separator: " ")
                + ", simulated " + result.simulatedBubbleRatio.map { String(format: "%.1f%%", 100 * $0) }.joined(separator: " "))
            print("    peak measured " + result.measuredPeakMemory.map(RenderStyle.bytes).joined(separator: " / ")
                + ", simulated " + result.simulatedPeakMemory.map(RenderStyle.bytes).joined(separator: " / "))
            panels.append(TimelinePanel(label: "\(result.schedule) measured", timeline: result.measured))
            panels.append(TimelinePanel(label: "\(result.schedule) simulated from the profile", timeline: result.simulated))
        }
        if results.count == 2, results[0].measuredStepTime > 0, results[1].measuredStepTime > 0 {
            print(String(format: "2BP speedup: measured %.3fx, simulated %.3fx",
                         results[0].measuredStepTime / results[1].measuredStepTime,
                         results[0].simulatedStepTime / results[1].simulatedStepTime))
        }
        if let svg {
            let title = "\(modelOptions.model) on \(stages) thread stages, OpenBLAS \(BLAS.coreName): measured vs simulated"
            try FileIO.writeOutput(URL(fileURLWithPath: svg), what: "--svg", text: TimelineSVG.renderStacked(panels, title: title))
            print("wrote \(svg)")
        }
        try writeJSON(results, to: compareJSON, what: "--compare-json")
    }
}
