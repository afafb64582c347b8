import Foundation
import Models
import Pipeline
import Schedules
import Tensor
import Training

/// `twobp bench pipeline`: each schedule plain and with 2BP, run alternately in one
/// process (or one MPI job) so that both see the same machine, several times over.
public enum PipelineBenchmark {
    public struct Variant: Codable {
        public var schedule: String
        public var twoBP: Bool
        public var microBatches: Int
        /// Throughput (tokens or samples per second, `Result.unit`) of each repeat (first step of each run excluded).
        public var throughput: [Double]
        public var medianThroughput: Double
        /// Per rank, mean over repeats of the measured idle time over step time.
        public var bubbleRatio: [Double]
        /// Per rank, the largest peak bytes over repeats.
        public var peakBytes: [Int]
    }

    public struct Comparison: Codable {
        public var schedule: String
        public var plain: Variant
        public var twoBP: Variant
        /// 2BP throughput over plain throughput (medians).
        public var speedup: Double
    }

    public struct Result: Codable {
        public var model: String
        public var stages: Int
        public var transport: String
        public var batchSize: Int
        public var sampleLength: Int
        /// What throughput counts: tokens or samples.
        public var unit: String
        public var stepsPerRun: Int
        public var repeats: Int
        public var blasCore: String
        public var comparisons: [Comparison]
    }

    /// Runs on every rank of `launch`; returns the result on rank 0.
    public static func run(base: TrainingSettings, schedules: [ScheduleKind], repeats: Int,
                           transport kind: TransportKind, progress: (String) -> Void) throws -> Result? {
        var runs: [String: [TrainingOutcome]] = [:]
        let stages = base.pipeline.ranks
        for repeat_ in 1...repeats {
            for schedule in schedules {
                for twoBP in [false, true] {
                    var settings = base
                    settings.pipeline = ScheduleRequest(kind: schedule, ranks: stages, microBatches: base.pipeline.microBatches,
                                                        twoBP: twoBP, chunksPerRank: base.pipeline.chunksPerRank)
                    let outcome = try RankLauncher.run(kind, ranks: stages) { transport in
                        try Trainer(settings: settings, transport: transport).run()
                    }
                    guard let outcome else { continue }
                    runs[key(schedule, twoBP), default: []].append(outcome)
                    let rate = Double(base.batchSize * outcome.unit.perSample) / outcome.stepTimeSeconds
                    progress(String(format: "repeat %d/%d %@%@: %.0f %@/s", repeat_, repeats, schedule.rawValue,
                                    twoBP ? " + 2BP" : "", rate, outcome.unit.name))
                }
            }
        }
        guard !runs.isEmpty else { return nil }
        let comparisons = try schedules.map { schedule -> Comparison in
            let microBatches = try ScheduleRequest(kind: schedule, ranks: stages, microBatches: base.pipeline.microBatches).resolved().microBatches
            let plain = variant(schedule, twoBP: false, microBatches: microBatches, runs[key(schedule, false)]!, base: base)
            let split = variant(schedule, twoBP: true, microBatches: microBatches, runs[key(schedule, true)]!, base: base)
            return Comparison(schedule: schedule.rawValue, plain: plain, twoBP: split,
                              speedup: split.medianThroughput / plain.medianThroughput)
        }
        let unit = runs.values.first?.first?.unit.name ?? "samples"
        return Result(model: base.modelName, stages: stages, transport: kind.rawValue, batchSize: base.batchSize,
                      sampleLength: base.sampleLength, unit: unit, stepsPerRun: base.steps, repeats: repeats,
                      blasCore: BLAS.coreName, comparisons: comparisons)
    }

    static func key(_ schedule: ScheduleKind, _ twoBP: Bool) -> String { schedule.rawValue + (twoBP ? "+2bp" : "") }

    static func variant(_ schedule: ScheduleKind, twoBP: Bool, microBatches: Int, _ outcomes: [TrainingOutcome],
                        base: TrainingSettings) -> Variant {
        let rates = outcomes.map { Double(base.batchSize * $0.unit.perSample) / $0.stepTimeSeconds }
        let ranks = outcomes[0].bubbleRatio.count
        return Variant(
            schedule: schedule.rawValue, twoBP: twoBP, microBatches: microBatches, throughput: rates,
            medianThroughput: rates.sorted()[rates.count / 2],
            bubbleRatio: (0..<ranks).map { rank in outcomes.map { $0.bubbleRatio[rank] }.reduce(0, +) / Double(outcomes.count) },
            peakBytes: (0..<ranks).map { rank in outcomes.map { $0.peakBytes[rank] }.max()! })
    }
}
