import Foundation
import Layers
import Models
import Pipeline
import Schedules
import Tensor
import Training

/// Measures a cost model on this machine: for each virtual stage of the
/// balanced partition a schedule would run, the seconds of F, p1 and p2 of
/// one micro-batch and of p2 concatenated over k micro-batches (`W*`), and the
/// bytes the stage's `MemoryMeter` sees kept alive between them.
///
/// Each stage is built on its own (its own chunk and meter) and fed random
/// activations and gradients of the right shape, so no pipeline runs; but the
/// ranks measure at the same time, one thread each, as the pipeline's stages
/// compute at the same time. Call with one BLAS thread to match a pipeline stage.
public enum Profiler {
    public struct Settings: Sendable {
        public var model: any ModelConfig
        public var modelName: String
        /// Decides the virtual stages (ranks × chunks) and the default micro-batches.
        public var request: ScheduleRequest
        /// Samples per step, split into the schedule's micro-batches.
        public var batchSize: Int
        public var sampleLength: Int
        /// Measurements per figure (after one warm-up); the median is kept.
        public var repeats: Int
        public var seed: UInt64

        public init(model: any ModelConfig, modelName: String, request: ScheduleRequest, batchSize: Int,
                    sampleLength: Int, repeats: Int = 3, seed: UInt64 = 1234) {
            self.model = model
            self.modelName = modelName
            self.request = request
            self.batchSize = batchSize
            self.sampleLength = sampleLength
            self.repeats = repeats
            self.seed = seed
        }
    }

    /// One virtual stage's measurements (seconds, bytes).
    public struct StageProfile: Codable, Sendable {
        public var stage: Int
        public var firstUnit: Int
        public var endUnit: Int
        public var parameters: Int
        public var forward: Double
        public var backwardInput: Double
        public var backwardWeight: Double
        /// Measured `W*` seconds by micro-batch count k (1, 2, 4, ..., M).
        public var concatenated: [Int: Double]
        /// Seconds of k single-micro-batch p2s run one after another after the same k p1s, by k:
        /// what `W*` must not exceed (both read stashes equally far back in the cache).
        public var separate: [Int: Double]
        public var activationBytes: Int
        public var stashBytes: Int
        /// 4 × parameters × 4 bytes: fp32 weights, gradients, AdamW m and v.
        public var staticBytes: Int
        /// Bytes the meter saw alive after building the chunk (weights + gradients).
        public var builtBytes: Int
    }

    public struct Result: Sendable {
        public var settings: Settings
        public var microBatches: Int
        public var microBatchSize: Int
        public var blasCore: String
        public var stages: [StageProfile]
        /// What `schedule --costs` and `plan --costs` read; `concatenatedBackwardWeight`
        /// is dense for k = 1...M (linear between the measured k).
        public var costs: CostModel

        /// The cost model's JSON with a `profile` object added (ignored when read back as a `CostModel`).
        public func jsonData() throws -> Data {
            try JSONLines.pretty(File(costs: costs, profile: Profile(result: self)))
        }

        /// What the profile file holds beside the cost model.
        struct Profile: Encodable {
            var model: String
            var schedule: String
            var batchSize: Int
            var microBatches: Int
            var microBatchSize: Int
            var sampleLength: Int
            var repeats: Int
            var blasCore: String
            var blasThreads = 1
            var statistic = "median"
            var stages: [StageProfile]

            init(result: Result) {
                model = result.settings.modelName
                schedule = result.settings.request.description
                batchSize = result.settings.batchSize
                microBatches = result.microBatches
                microBatchSize = result.microBatchSize
                sampleLength = result.settings.sampleLength
                repeats = result.settings.repeats
                blasCore = result.blasCore
                stages = result.stages
            }
        }

        /// The cost model's own keys, and `profile`.
        struct File: Encodable {
            var costs: CostModel
            var profile: Profile

            func encode(to encoder: Encoder) throws {
                try costs.encode(to: encoder)
                var container = encoder.container(keyedBy: ProfileKey.self)
                try container.encode(profile, forKey: .profile)
            }

            enum ProfileKey: CodingKey { case profile }
        }
    }

    public static func run(_ settings: Settings) throws -> Result {
        guard settings.repeats >= 1 else { throw TwoBPError("--repeats must be at least 1, got \(settings.repeats)") }
        let plan = try PipelinePlan(request: settings.request, model: settings.model, sampleLength: settings.sampleLength)
        let microBatches = plan.schedule.microBatches
        let batch = settings.model.randomBatch(samples: settings.batchSize, sampleLength: settings.sampleLength, seed: settings.seed)
        let microBatch = try batch.split(into: microBatches)[0]
        var counts = [1]
        while counts.last! * 2 <= microBatches { counts.append(counts.last! * 2) }
        if counts.last! != microBatches { counts.append(microBatches) }
        // Each rank's thread measures its own stages while the other ranks measure theirs, so the
        // costs include what concurrent stages do to each other (shared caches and memory bandwidth).
        let schedule = plan.schedule
        let perRank = try RankThreads.run(transports: ThreadTransport.group(ranks: schedule.ranks)) { transport in
            try (0..<schedule.chunksPerRank).map { chunk in
                let stage = schedule.stage(rank: transport.rank, chunk: chunk)
                return try profileStage(stage, units: plan.unitRanges[stage], settings: settings, microBatch: microBatch, counts: counts)
            }
        }
        let profiles = perRank.flatMap { $0 }.sorted { $0.stage < $1.stage }
        let stageCosts = profiles.map { profile in
            StageCost(forward: profile.forward, backwardInput: profile.backwardInput, backwardWeight: profile.backwardWeight,
                      concatenatedBackwardWeight: denseTable(profile.concatenated, upTo: microBatches),
                      activationBytes: profile.activationBytes, stashBytes: profile.stashBytes, staticBytes: profile.staticBytes)
        }
        // The largest tensor a stage boundary carries for one micro-batch.
        let boundaries = plan.unitRanges.dropLast().map { range in
            settings.model.activationShape(enteringUnit: range.upperBound, samples: microBatch.sampleCount,
                                           sampleLength: settings.sampleLength).reduce(1, *)
        }
        let messageBytes = (boundaries.max() ?? 0) * MemoryLayout<Float>.stride
        let costs = CostModel(stages: stageCosts, messageBytes: messageBytes)
        try costs.check(virtualStages: stageCosts.count)
        return Result(settings: settings, microBatches: microBatches, microBatchSize: microBatch.sampleCount,
                      blasCore: BLAS.coreName, stages: profiles, costs: costs)
    }

    /// k = 1...upTo, from the measured k by linear interpolation (and extrapolation past the last).
    static func denseTable(_ measured: [Int: Double], upTo count: Int) -> [Double] {
        let points = measured.sorted { $0.key < $1.key }
        return (1...count).map { k in
            if let exact = measured[k] { return exact }
            let upper = points.firstIndex { $0.key > k } ?? points.count - 1
            let lower = max(0, upper - 1)
            let (k0, t0) = points[lower], (k1, t1) = points[upper]
            guard k1 != k0 else { return t0 * Double(k) / Double(k0) }
            return t0 + (t1 - t0) * Double(k - k0) / Double(k1 - k0)
        }
    }

    private static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    private static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    private static func profileStage(_ stage: Int, units: Range<Int>, settings: Settings, microBatch: any MicroBatch,
                                     counts: [Int]) throws -> StageProfile {
        let meter = MemoryMeter(name: "profile stage \(stage)")
        return try MemoryMeter.withCurrent(meter) {
            let chunk = try settings.model.makeChunk(units: units, seed: settings.seed, shared: SharedParameters())
            let built = meter.liveBytes
            let parameters = chunk.parameters.reduce(0) { $0 + $1.value.count }
            var generator = SeededGenerator(seed: settings.seed &+ UInt64(stage))
            func randomTensor(_ shape: [Int]?, std: Float) -> Tensor? {
                guard let shape else { return nil }
                let tensor = Tensor(zeros: shape)
                tensor.fillNormal(std: std, using: &generator)
                return tensor
            }

            var forwardTimes: [Double] = [], inputTimes: [Double] = []
            var weightTimes: [Int: [Double]] = [:], separateTimes: [Int: [Double]] = [:]
            var activationBytes = 0, stashBytes = 0
            /// F, p1 of k micro-batches, then one p2 over them (or, when `separately`, one p2 per
            /// micro-batch); records times when `record`.
            func round(_ k: Int, separately: Bool = false, record: Bool) throws {
                for m in 0..<k {
                    let before = meter.liveBytes
                    try scoped {
                        let input = randomTensor(try chunk.inputShape(for: microBatch), std: 1)
                        var output: ChunkOutput?
                        let time = try seconds { output = try chunk.forward(input, batch: microBatch, microBatch: m) }
                        if record { forwardTimes.append(time) }
                        _ = output
                    }
                    if m == 0 { activationBytes = meter.liveBytes - before }
                }
                for m in 0..<k {
                    let before = meter.liveBytes
                    try scoped {
                        let gradient = randomTensor(try chunk.outputShape(for: microBatch), std: 1e-3)
                        var inputGradient: Tensor?
                        let time = try seconds { inputGradient = try chunk.backwardInput(gradient, microBatch: m) }
                        if record { inputTimes.append(time) }
                        _ = inputGradient
                    }
                    if m == 0 { stashBytes = activationBytes + meter.liveBytes - before }
                }
                if separately {
                    let time = try seconds { for m in 0..<k { try chunk.backwardWeight(.microBatch(m)) } }
                    if record { separateTimes[k, default: []].append(time) }
                } else {
                    let time = try seconds { try chunk.backwardWeight(k == 1 ? .microBatch(0) : .allPending) }
                    if record { weightTimes[k, default: []].append(time) }
                }
            }
            try round(1, record: false)  // warm-up: first-touch allocations, BLAS buffers
            for _ in 0..<settings.repeats {
                for k in counts {
                    try round(k, record: true)
                    if k > 1 { try round(k, separately: true, record: true) }
                }
            }
            let concatenated = weightTimes.mapValues(median)
            let separate = separateTimes.mapValues(median).merging([1: concatenated[1] ?? 0]) { measured, _ in measured }
            return StageProfile(
                stage: stage, firstUnit: units.lowerBound, endUnit: units.upperBound, parameters: parameters,
                forward: median(forwardTimes), backwardInput: median(inputTimes), backwardWeight: concatenated[1] ?? 0,
                concatenated: concatenated, separate: separate, activationBytes: max(0, activationBytes), stashBytes: max(0, stashBytes),
                staticBytes: 4 * parameters * MemoryLayout<Float>.stride, builtBytes: built)
        }
    }
}

/// Scopes temporaries so they are freed before the meter is read.
@inline(__always)
private func scoped<T>(_ body: () throws -> T) rethrows -> T { try body() }
