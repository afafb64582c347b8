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

    /// One rank's step split by what it did, from an extra instrumented run of the fastest variant.
    public struct RankTime: Codable {
        public var rank: Int
        public var stepSeconds: Double
        /// Inside GEMMs: the run's GEMM time on this rank over its steps.
        public var gemmSeconds: Double
        /// F, p1 and p2 outside GEMMs (the last step's compute actions minus the GEMM time).
        public var otherComputeSeconds: Double
        /// Sends and receives, waiting for the peer included (the last step's).
        public var communicationSeconds: Double
        /// The rest of the step: between actions, the tied-gradient sum, the step's reduction and AdamW.
        public var idleSeconds: Double
    }

    /// The whole model on one device with TwoBP's threads (`Parallel`): what a user with one
    /// machine runs instead of a pipeline, measured in the same alternation.
    public struct SingleDevice: Codable {
        public var threads: Int
        public var throughput: [Double]
        public var medianThroughput: Double
    }

    /// The fastest variant against the machine's limit: every stage's core running one-thread
    /// sgemm all step long, `stages × sgemm rate ÷ training FLOPs per step` steps per second.
    public struct Limit: Codable {
        /// A 1024³ one-thread sgemm, measured in this run (the better of before and after).
        public var sgemmOneThreadGFLOPS: Double
        public var stepGFLOPs: Double
        public var limitThroughput: Double
        public var bestSchedule: String
        public var bestTwoBP: Bool
        public var bestThroughput: Double
        public var fractionOfLimit: Double
        public var breakdown: [RankTime]
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
        public var limit: Limit
        /// Nil under MPI (one rank per stage there).
        public var singleDevice: SingleDevice?
    }

    /// Runs on every rank of `launch`; returns the result on rank 0.
    public static func run(base: TrainingSettings, schedules: [ScheduleKind], repeats: Int,
                           transport kind: TransportKind, progress: (String) -> Void) throws -> Result? {
        var runs: [String: [TrainingOutcome]] = [:]
        var singleDeviceRates: [Double] = []
        let stages = base.pipeline.ranks
        let deviceThreads = ProcessInfo.processInfo.activeProcessorCount
        let sgemmBefore = Parallel.withThreads(1) { StepBenchmark.sgemmRate() }
        for repeat_ in 1...repeats {
            if kind == .threads {
                var settings = base
                settings.pipeline = ScheduleRequest(kind: .naive, ranks: 1)
                let outcome = try Parallel.withThreads(deviceThreads) {
                    try RankLauncher.run(.threads, ranks: 1) { transport in try Trainer(settings: settings, transport: transport).run() }
                }
                if let outcome {
                    singleDeviceRates.append(Double(base.batchSize * outcome.unit.perSample) / outcome.stepTimeSeconds)
                    progress(String(format: "repeat %d/%d one device, %d threads: %.0f %@/s", repeat_, repeats, deviceThreads,
                                    singleDeviceRates.last!, outcome.unit.name))
                }
            }
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
        let sgemm = max(sgemmBefore, Parallel.withThreads(1) { StepBenchmark.sgemmRate() })
        guard !runs.isEmpty else { return nil }
        let comparisons = try schedules.map { schedule -> Comparison in
            let microBatches = try ScheduleRequest(kind: schedule, ranks: stages, microBatches: base.pipeline.microBatches).resolved().microBatches
            let plain = variant(schedule, twoBP: false, microBatches: microBatches, runs[key(schedule, false)]!, base: base)
            let split = variant(schedule, twoBP: true, microBatches: microBatches, runs[key(schedule, true)]!, base: base)
            return Comparison(schedule: schedule.rawValue, plain: plain, twoBP: split,
                              speedup: split.medianThroughput / plain.medianThroughput)
        }
        let unit = runs.values.first?.first?.unit.name ?? "samples"
        let best = comparisons.flatMap { [$0.plain, $0.twoBP] }.max { $0.medianThroughput < $1.medianThroughput }!
        let stepFLOPs = base.model.trainingFLOPsPerSample(sampleLength: base.sampleLength) * Double(base.batchSize)
        let unitsPerStep = Double(base.batchSize * (runs.values.first?.first?.unit.perSample ?? 1))
        let limitThroughput = Double(stages) * sgemm * 1e9 / stepFLOPs * unitsPerStep
        let breakdown = kind == .threads ? try rankTimes(of: best, base: base) : []
        return Result(model: base.modelName, stages: stages, transport: kind.rawValue, batchSize: base.batchSize,
                      sampleLength: base.sampleLength, unit: unit, stepsPerRun: base.steps, repeats: repeats,
                      blasCore: BLAS.coreName, comparisons: comparisons,
                      limit: Limit(sgemmOneThreadGFLOPS: sgemm, stepGFLOPs: stepFLOPs / 1e9, limitThroughput: limitThroughput,
                                   bestSchedule: best.schedule, bestTwoBP: best.twoBP, bestThroughput: best.medianThroughput,
                                   fractionOfLimit: best.medianThroughput / limitThroughput, breakdown: breakdown),
                      singleDevice: singleDeviceRates.isEmpty ? nil : SingleDevice(
                          threads: deviceThreads, throughput: singleDeviceRates, medianThroughput: median(singleDeviceRates)))
    }

    /// One more run of `variant` on threads with each rank's GEMMs counted, its last step split per rank.
    static func rankTimes(of variant: Variant, base: TrainingSettings) throws -> [RankTime] {
        var settings = base
        settings.pipeline = ScheduleRequest(kind: try ScheduleKind(name: variant.schedule), ranks: base.pipeline.ranks,
                                            microBatches: base.pipeline.microBatches, twoBP: variant.twoBP,
                                            chunksPerRank: base.pipeline.chunksPerRank)
        let profiles = (0..<base.pipeline.ranks).map { _ in GEMMProfile() }
        let outcome = try RankLauncher.run(.threads, ranks: base.pipeline.ranks) { transport in
            try GEMMProfile.withCurrent(profiles[transport.rank]) { try Trainer(settings: settings, transport: transport).run() }
        }
        guard let outcome else { return [] }
        return profiles.enumerated().map { rank, profile in
            let events = outcome.lastStepTimeline.events.filter { $0.rank == rank }
            func seconds(_ isCommunication: Bool) -> Double {
                events.filter { $0.action.kind.isCommunication == isCommunication }.reduce(0) { $0 + $1.duration }
            }
            let gemm = profile.totals.seconds / Double(base.steps)
            let (compute, communication) = (seconds(false), seconds(true))
            return RankTime(rank: rank, stepSeconds: outcome.stepTimeSeconds, gemmSeconds: gemm,
                            otherComputeSeconds: max(0, compute - gemm), communicationSeconds: communication,
                            idleSeconds: max(0, outcome.stepTimeSeconds - compute - communication))
        }
    }

    static func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    static func key(_ schedule: ScheduleKind, _ twoBP: Bool) -> String { schedule.rawValue + (twoBP ? "+2bp" : "") }

    static func variant(_ schedule: ScheduleKind, twoBP: Bool, microBatches: Int, _ outcomes: [TrainingOutcome],
                        base: TrainingSettings) -> Variant {
        let rates = outcomes.map { Double(base.batchSize * $0.unit.perSample) / $0.stepTimeSeconds }
        let ranks = outcomes[0].bubbleRatio.count
        return Variant(
            schedule: schedule.rawValue, twoBP: twoBP, microBatches: microBatches, throughput: rates,
            medianThroughput: median(rates),
            bubbleRatio: (0..<ranks).map { rank in outcomes.map { $0.bubbleRatio[rank] }.reduce(0, +) / Double(outcomes.count) },
            peakBytes: (0..<ranks).map { rank in outcomes.map { $0.peakBytes[rank] }.max()! })
    }
}
