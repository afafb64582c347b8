import Data
import Foundation
import Models
import Pipeline
import Schedules
import Tensor
import Training

/// `twobp bench paper`: the 2BP paper's table for every model family, measured here and simulated
/// beyond this machine.
///
/// Not modelled: a GEMM's efficiency as a function of its shape (the concatenated p2 of small
/// micro-batches costs what its FLOPs cost), so the simulated 2BP gains are those of the schedule alone.
///
/// Per family:
/// - **measured**: its `-small` configuration on 2 thread stages, every schedule plain and with 2BP
///   alternately (`PipelineBenchmark`), beside the simulator's prediction for the same run from
///   costs profiled here (`Profiler`, one profile per schedule, whose micro-batch size it fixes);
/// - **simulated, more stages**: the same configuration at 4 and 8 stages, priced from its FLOPs at
///   the rate the 2-stage profile achieved per rank (this machine has 2 cores, so these are not run);
/// - **simulated, paper size**: its largest named configuration (llama-7b, bert-large, …) at 4 stages
///   with the paper's micro-batch sizes, priced from FLOPs at a stated accelerator rate.
public enum PaperBenchmark {
    public struct Settings: Sendable {
        public var families: [any ModelConfig.Type]
        /// Which named configuration is measured: `-small` (the benchmark size) or `-tiny` (a smoke test).
        public var measuredSize: String
        public var schedules: [ScheduleKind]
        public var repeats: Int
        public var steps: Int
        public var batchSize: Int
        /// FLOP/s one accelerator sustains on the paper-size models' GEMMs.
        public var acceleratorFLOPS: Double
        public var seed: UInt64

        public init(families: [any ModelConfig.Type], measuredSize: String = "small", schedules: [ScheduleKind] = ScheduleKind.allCases, repeats: Int = 3,
                    steps: Int = 3, batchSize: Int = 16, acceleratorFLOPS: Double = 0.5 * 312e12, seed: UInt64 = 1234) {
            self.families = families
            self.measuredSize = measuredSize
            self.schedules = schedules
            self.repeats = repeats
            self.steps = steps
            self.batchSize = batchSize
            self.acceleratorFLOPS = acceleratorFLOPS
            self.seed = seed
        }
    }

    /// One schedule of one family at 2 stages: measured, and predicted by the simulator.
    public struct MeasuredRow: Codable {
        public var schedule: String
        public var measured: PipelineBenchmark.Comparison
        public var predictedSpeedup: Double
        public var predictedPeakBytesPlain: [Int]
        public var predictedPeakBytesTwoBP: [Int]
    }

    /// One schedule of one family, simulated only.
    public struct SimulatedRow: Codable {
        public var schedule: String
        public var stages: Int
        public var microBatchSize: Int
        public var speedup: Double
        public var peakBytesPlain: [Int]
        public var peakBytesTwoBP: [Int]
    }

    public struct FamilyResult: Codable {
        public var family: String
        public var smallModel: String
        public var paperModel: String
        public var unit: String
        public var measured: [MeasuredRow]
        /// Per-rank FLOP/s the 2-stage profile achieved, which prices the 4- and 8-stage rows.
        public var profiledFLOPSPerRank: Double
        public var moreStages: [SimulatedRow]
        public var paperSize: [SimulatedRow]
    }

    public struct Result: Codable {
        public var blasCore: String
        public var acceleratorFLOPS: Double
        public var families: [FamilyResult]
    }

    /// The paper's micro-batch sizes: 1 sequence for the transformer, 2 for BERT and Mamba, 8 images for ResNet.
    static func paperMicroBatchSize(_ config: any ModelConfig) -> Int {
        switch type(of: config).modelType {
        case "llama": 1
        case "resnet": 8
        default: 2
        }
    }

    public static func run(_ settings: Settings, progress: (String) -> Void) throws -> Result {
        var families: [FamilyResult] = []
        for family in settings.families {
            guard let configs = ModelRegistry.benchmarkConfigs(of: family, measuredSize: settings.measuredSize) else {
                throw TwoBPError("family \(family.modelType) has no -\(settings.measuredSize) configuration to measure")
            }
            progress("\(family.modelType): measuring \(configs.small.name) at 2 stages, simulating \(configs.paper.name)")
            families.append(try runFamily(family.modelType, small: configs.small, paper: configs.paper, settings: settings,
                                          progress: progress))
        }
        return Result(blasCore: BLAS.coreName, acceleratorFLOPS: settings.acceleratorFLOPS, families: families)
    }

    static func runFamily(_ name: String, small: (name: String, config: any ModelConfig), paper: (name: String, config: any ModelConfig),
                          settings: Settings, progress: (String) -> Void) throws -> FamilyResult {
        let config = small.config
        let sampleLength = config.defaultSampleLength
        var base = TrainingSettings(
            model: config, data: DataSources.defaultFile(for: config.dataKind), steps: settings.steps,
            batchSize: settings.batchSize, sampleLength: sampleLength, learningRate: 1e-4, warmupSteps: 0,
            seed: settings.seed, evaluateEvery: nil, validationBatches: 1,
            pipeline: ScheduleRequest(kind: .gpipe, ranks: 2), showProgress: false)
        base.modelName = small.name
        let measured = try PipelineBenchmark.run(base: base, schedules: settings.schedules, repeats: settings.repeats,
                                                 transport: .threads, progress: progress)!

        var rows: [MeasuredRow] = []
        var profiledRates: [Double] = []
        for comparison in measured.comparisons {
            let kind = try ScheduleKind(name: comparison.schedule)
            let request = ScheduleRequest(kind: kind, ranks: 2)
            let profile = try Profiler.run(Profiler.Settings(model: config, modelName: small.name, request: request,
                                                             batchSize: settings.batchSize, sampleLength: sampleLength,
                                                             seed: settings.seed))
            let microBatchFLOPs = config.trainingFLOPsPerSample(sampleLength: sampleLength) * Double(profile.microBatchSize)
            let seconds = profile.stages.reduce(0) { $0 + $1.forward + $1.backwardInput + $1.backwardWeight }
            profiledRates.append(microBatchFLOPs / seconds)
            let report = try PlanRanking.rank(
                PlanRanking.Settings(ranks: 2, microBatches: profile.microBatches, microBatchSize: profile.microBatchSize,
                                     sequenceLength: sampleLength, kinds: [.kind(kind)])) { _, _ in profile.costs }
            let (plain, split) = try entries(report, kind: kind)
            rows.append(MeasuredRow(schedule: kind.rawValue, measured: comparison,
                                    predictedSpeedup: split.samplesPerSecond / plain.samplesPerSecond,
                                    predictedPeakBytesPlain: plain.peakMemory, predictedPeakBytesTwoBP: split.peakMemory))
            progress(String(format: "%@ %@: measured 2BP/plain %.3f, simulated %.3f", name, kind.rawValue,
                            comparison.speedup, rows.last!.predictedSpeedup))
        }
        let rate = profiledRates.sorted()[profiledRates.count / 2]
        let moreStages = try [4, 8].flatMap { stages in
            try simulate(config, stages: stages, microBatchSize: 1, sampleLength: sampleLength, flops: rate,
                         elementBytes: 4, staticBytesPerParameter: 16, schedules: settings.schedules)
        }
        let paperSize = try simulate(paper.config, stages: 4, microBatchSize: paperMicroBatchSize(paper.config),
                                     sampleLength: paper.config.defaultSampleLength, flops: settings.acceleratorFLOPS,
                                     elementBytes: 2, staticBytesPerParameter: 16, schedules: settings.schedules)
        return FamilyResult(family: name, smallModel: small.name, paperModel: paper.name, unit: measured.unit,
                            measured: rows, profiledFLOPSPerRank: rate, moreStages: moreStages, paperSize: paperSize)
    }

    /// Every schedule plain and with 2BP on `stages` ranks, FLOP-priced at `flops` per rank.
    static func simulate(_ config: any ModelConfig, stages: Int, microBatchSize: Int, sampleLength: Int, flops: Double,
                         elementBytes: Int, staticBytesPerParameter: Int, schedules: [ScheduleKind]) throws -> [SimulatedRow] {
        let analytic = AnalyticCostSettings(flopsRate: flops, microBatchSize: microBatchSize, sampleLength: sampleLength,
                                            activationElementBytes: elementBytes, staticBytesPerParameter: staticBytesPerParameter)
        // A model with fewer units than stages cannot be planned at all: its row stays empty.
        guard let report = try? PlanRanking.rank(
            PlanRanking.Settings(ranks: stages, microBatchSize: microBatchSize, sequenceLength: sampleLength,
                                 kinds: schedules.map { .kind($0) }), costs: { virtualStages, scale in
            try AnalyticCosts.costModel(config, settings: analytic, virtualStages: virtualStages, scale: scale)
        }) else { return [] }
        return schedules.compactMap { kind in
            guard let (plain, split) = try? entries(report, kind: kind) else { return nil }
            return SimulatedRow(schedule: kind.rawValue, stages: stages, microBatchSize: microBatchSize,
                                speedup: split.samplesPerSecond / plain.samplesPerSecond,
                                peakBytesPlain: plain.peakMemory, peakBytesTwoBP: split.peakMemory)
        }
    }

    /// The plain and 2BP entries of `kind` in a plan report.
    static func entries(_ report: PlanReport, kind: ScheduleKind) throws -> (plain: PlanEntry, twoBP: PlanEntry) {
        guard let plain = report.entries.first(where: { $0.kind == kind.rawValue && !$0.twoBP }),
              let split = report.entries.first(where: { $0.kind == kind.rawValue && $0.twoBP }) else {
            let reasons = report.skipped.map { "\($0.schedule): \($0.reason)" }.joined(separator: "; ")
            throw TwoBPError("the simulator could not plan \(kind.rawValue): \(reasons)")
        }
        return (plain, split)
    }
}

extension PaperBenchmark.Result {
    /// The table as Markdown: per family, the measured rows beside the simulator, then the simulated ones.
    public var markdown: String {
        func mebibytes(_ bytes: [Int]) -> String { bytes.map { String($0 >> 20) }.joined(separator: " ") }
        func spread(_ values: [Double]) -> String {
            guard let low = values.min(), let high = values.max() else { return "" }
            let median = values.sorted()[values.count / 2]
            return String(format: "%.0f ±%.1f%%", median, 50 * (high - low) / median)
        }
        var lines: [String] = []
        for family in families {
            lines.append("### \(family.family): \(family.smallModel) measured at 2 stages, \(family.paperModel) simulated\n")
            lines.append("| schedule | plain \(family.unit)/s | 2BP \(family.unit)/s | **2BP / plain** | simulated | peak MiB plain | peak MiB 2BP | memory 2BP / plain | bubble plain | bubble 2BP |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|")
            for row in family.measured {
                let c = row.measured
                let memory = Double(c.twoBP.peakBytes.max() ?? 0) / Double(max(1, c.plain.peakBytes.max() ?? 1))
                let bubbles = { (v: PipelineBenchmark.Variant) in v.bubbleRatio.map { String(format: "%.2f", $0) }.joined(separator: " ") }
                lines.append("| \(row.schedule) | \(spread(c.plain.throughput)) | \(spread(c.twoBP.throughput)) | "
                    + String(format: "**%.3f** | %.3f | ", c.speedup, row.predictedSpeedup)
                    + "\(mebibytes(c.plain.peakBytes)) | \(mebibytes(c.twoBP.peakBytes)) | " + String(format: "%.2f", memory)
                    + " | \(bubbles(c.plain)) | \(bubbles(c.twoBP)) |")
            }
            lines.append("")
            lines.append(String(format: "Simulated (2BP / plain, peak MiB per rank plain → 2BP): %@ at 4 and 8 stages priced at %.1f GFLOP/s per rank "
                                + "(what the 2-stage profile achieved); %@ at 4 stages priced at %.0f TFLOP/s per accelerator.\n",
                                family.smallModel, family.profiledFLOPSPerRank / 1e9, family.paperModel, acceleratorFLOPS / 1e12))
            lines.append("| schedule | \(family.smallModel), 4 stages | \(family.smallModel), 8 stages | \(family.paperModel), 4 stages |")
            lines.append("|---|---|---|---|")
            for schedule in family.measured.map(\.schedule) {
                let cells = [family.moreStages.filter { $0.stages == 4 }, family.moreStages.filter { $0.stages == 8 }, family.paperSize]
                    .map { rows in rows.first { $0.schedule == schedule }.map {
                        String(format: "%.3f (%@ → %@)", $0.speedup, mebibytes([$0.peakBytesPlain.max() ?? 0]),
                               mebibytes([$0.peakBytesTwoBP.max() ?? 0]))
                    } ?? "–" }
                lines.append("| \(schedule) | " + cells.joined(separator: " | ") + " |")
            }
            lines.append("")
        }
        return lines.joined(separator: "\n")
    }
}
