import ArgumentParser
import Benchmarks
import Checkpoints
import Data
import Foundation
import Models
import Schedules
import Tensor
import Training
/// `twobp plan`: every schedule ranked by simulated throughput for a model and pipeline size.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Rank every schedule (with and without 2BP) by predicted throughput, peak memory per rank.",
        discussion: """
            Candidates: naive, gpipe, 1f1b-1, 1f1b-2, interleaved, zb-h1, zb-h2, zb-v, each without and with \
            2BP, and auto (a 2BP schedule built for the costs and --memory-limit). Each runs its own number of \
            micro-batches of --micro-batch-size sequences (S for gpipe and 1f1b-1, 2S for the others; \
            --micro-batches sets it for all); naive runs gpipe's batch as one micro-batch.
            Costs: --costs (a JSON file from `twobp profile`, with one entry per virtual stage or one for all), \
            else derived from the model: time = FLOPs of each stage's units / --flops-rate (default: this \
            machine's measured 1-thread sgemm rate), memory = --bytes-per-parameter × parameters (16: fp32 \
            weights, gradients, Adam m and v, or bf16 mixed precision with fp32 master + Adam) plus the \
            family's activations and 2BP stash per sample, e bytes each (for LLaMa per layer \
            e·sb(6h + 2kv + 3i) + e·a·s²b and e·sb(10h + 2kv + 3i), Korthikanti et al. 2022 adapted; \
            e = --activation-bytes, default 2 for bf16).
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(parsing: .unconditional, help: "Pipeline stages (ranks).")
    var stages = 4

    @Option(name: .customLong("micro-batches"), parsing: .unconditional, help: "Micro-batches per step for every schedule (default: each schedule's own).")
    var microBatches: Int?

    @Option(name: .customLong("micro-batch-size"), parsing: .unconditional, help: "Sequences per micro-batch.")
    var microBatchSize = 1

    @Option(name: .customLong("memory-limit"), help: "Bytes per rank, e.g. 80GiB; entries over it are marked and auto keeps under it.")
    var memoryLimit: String?

    @Option(help: "Cost model JSON (from `twobp profile`) instead of the FLOP-based model.")
    var costs: String?

    @Option(name: .customLong("flops-rate"), parsing: .unconditional, help: "FLOP/s per rank for the FLOP-based model, e.g. 312e12 (A100 bf16 peak). Default: measured sgemm here, 1 thread.")
    var flopsRate: Double?

    @Option(parsing: .unconditional, help: "Bytes/s of the link between ranks, e.g. 25e9 (default: free communication).")
    var bandwidth: Double?

    @Option(parsing: .unconditional, help: "Seconds of latency per transfer.")
    var latency = 0.0

    @Option(name: .customLong("activation-bytes"), parsing: .unconditional, help: "Bytes per activation value (2: bf16, 4: fp32).")
    var activationBytes = 2

    @Option(name: .customLong("bytes-per-parameter"), parsing: .unconditional, help: "Static bytes per parameter: weights, gradients, optimizer state.")
    var bytesPerParameter = 16

    @Option(parsing: .unconditional, help: "Fraction of a single p2 that each extra micro-batch of a concatenated p2 costs (FLOP-based model; 1 = no gain).")
    var efficiency = 1.0

    @Option(help: "Write the ranking as JSON to this file.")
    var json: String?

    func run() throws {
        try PlanInputs.checkStages(stages)
        guard microBatchSize >= 1 else { throw TwoBPError("--micro-batch-size must be at least 1, got \(microBatchSize)") }
        if let microBatches, microBatches < 1 { throw TwoBPError("--micro-batches must be at least 1, got \(microBatches)") }
        if let microBatches, microBatches > ScheduleRequest.maxMicroBatches {
            throw TwoBPError("--micro-batches \(microBatches) is more than the \(ScheduleRequest.maxMicroBatches) a schedule accepts")
        }
        guard activationBytes >= 1, bytesPerParameter >= 0 else {
            throw TwoBPError("--activation-bytes must be at least 1 and --bytes-per-parameter at least 0")
        }
        if let bandwidth, !(bandwidth > 0 && bandwidth.isFinite) { throw TwoBPError("--bandwidth must be positive, got \(bandwidth)") }
        guard latency >= 0, latency.isFinite else { throw TwoBPError("--latency must be zero or more seconds, got \(latency)") }
        guard efficiency > 0, efficiency.isFinite else {
            throw TwoBPError("--efficiency must be a positive fraction (1 = no gain from concatenating p2), got \(efficiency)")
        }
        let (config, sequenceLength) = try modelOptions.resolve()
        let limit = try memoryLimit.map(PlanInputs.bytes)
        let settings = PlanRanking.Settings(ranks: stages, microBatches: microBatches, microBatchSize: microBatchSize,
                                            sequenceLength: sequenceLength, memoryLimit: limit)
        let report: PlanReport
        if let costs {
            let model = try PlanInputs.costModel(costs)
            print("model \(modelOptions.model), \(stages) stages, costs from \(costs) (micro-batch as profiled; --micro-batch-size only labels throughput)")
            report = try PlanRanking.rank(settings) { virtualStages, scale in
                guard model.stages.count == 1 || model.stages.count == virtualStages else {
                    throw TwoBPError("the cost file has \(model.stages.count) stages, this schedule needs \(virtualStages) (profile with --chunks to cover it)")
                }
                return scale == 1 ? model : model.scaled(time: Double(scale), memory: Double(scale))
            } progress: { showProgress($0, $1, $2) }
        } else {
            let rate: Double
            if let flopsRate {
                guard flopsRate > 0, flopsRate.isFinite else { throw TwoBPError("--flops-rate must be positive, got \(flopsRate)") }
                rate = flopsRate
                print(String(format: "model %@, %d stages, FLOP-based costs at %.4g FLOP/s per rank (given)", modelOptions.model, stages, rate))
            } else {
                Parallel.setThreads(1)
                rate = StepBenchmark.sgemmRate() * 1e9
                print(String(format: "model %@, %d stages, FLOP-based costs at %.4g FLOP/s per rank (sgemm 1024³ here, 1 thread, OpenBLAS %@)",
                             modelOptions.model, stages, rate, BLAS.coreName))
            }
            let analytic = AnalyticCostSettings(flopsRate: rate, bandwidth: bandwidth, latency: latency, microBatchSize: microBatchSize,
                                                sampleLength: sequenceLength, activationElementBytes: activationBytes,
                                                staticBytesPerParameter: bytesPerParameter, concatenationEfficiency: efficiency)
            print("sequence length \(sequenceLength), micro-batch \(microBatchSize), \(activationBytes)-byte activations, \(bytesPerParameter) bytes/parameter, "
                + (bandwidth.map { String(format: "link %.3g B/s", $0) } ?? "free communication")
                + ", W* efficiency \(efficiency)")
            report = try PlanRanking.rank(settings) { virtualStages, scale in
                try AnalyticCosts.costModel(config, settings: analytic, virtualStages: virtualStages, scale: scale)
            } progress: { showProgress($0, $1, $2) }
        }
        showProgress(1, 1, "")
        print(report.table)
        try writeJSON(report, to: json)
    }

    /// "planning 3/17: 1f1b-1+2bp" on a terminal's stderr, so long plans (thousands of
    /// micro-batches) show they are working; redirected output stays the table alone.
    private func showProgress(_ done: Int, _ total: Int, _ candidate: String) {
        guard isatty(STDERR_FILENO) != 0 else { return }
        let line = done == total ? "\r\u{1B}[K" : "\rplanning \(done + 1)/\(total): \(candidate)\u{1B}[K"
        FileHandle.standardError.write(Data(line.utf8))
    }
}
