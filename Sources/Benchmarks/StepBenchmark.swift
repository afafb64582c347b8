import Foundation
import Models
import Pipeline
import Schedules
import Tensor
import Training

/// `twobp bench step`: how close a single-device training step comes to the
/// GEMM rate OpenBLAS reaches on this machine, and where the rest of the time goes.
public enum StepBenchmark {
    public struct Result: Codable {
        public var model: String
        public var batchSize: Int
        public var sampleLength: Int
        public var blasCore: String
        public var blasThreads: Int
        /// A square sgemm of `referenceGEMMSize`, measured in the same run with the same threads (the better of before and after the steps).
        public var referenceGEMMSize: Int
        public var sgemmGFLOPS: Double
        public var steps: Int
        public var stepSeconds: Double
        public var stepGFLOPs: Double
        public var achievedGFLOPS: Double
        /// achievedGFLOPS / sgemmGFLOPS; the goal is at least 0.75.
        public var fractionOfSGEMM: Double
        /// Mean seconds per step by phase: forward, backward_input (p1), backward_weight (p2), optimizer.
        public var phaseSeconds: [String: Double]
        /// Mean seconds per step inside BLAS GEMMs, their rate, and everything else.
        public var gemmSeconds: Double
        public var gemmGFLOPS: Double
        public var nonGEMMSeconds: Double
        /// Whether one more step's loss and gradients, computed with `blasThreads` threads and with
        /// one from the same weights, are bit-identical; and their largest difference relative to
        /// each tensor's largest gradient (0 when identical).
        public var bitIdenticalToOneThread: Bool
        public var largestRelativeDifferenceToOneThread: Double
    }

    /// GFLOP/s of an n×n×n sgemm, the best of a few runs.
    public static func sgemmRate(size n: Int = 1024, repeats: Int = 5) -> Double {
        let a = Tensor(zeros: [n, n]), b = Tensor(zeros: [n, n]), c = Tensor(zeros: [n, n])
        var generator = SeededGenerator(seed: 1)
        a.fillNormal(std: 1, using: &generator)
        b.fillNormal(std: 1, using: &generator)
        var best = Double.infinity
        for _ in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            BLAS.matmul(c, a, b)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return 2 * Double(n * n * n) / best / 1e9
    }

    /// Times `steps` training steps after one warm-up step, split into phases by running
    /// the step as naive + 2BP (F, then I, then one concatenated W*).
    public static func run(model: any ModelConfig, name: String, batchSize: Int, sampleLength: Int, steps: Int,
                           blasThreads: Int, seed: UInt64 = 1) throws -> Result {
        let gemmSize = 1024
        // The reference rate is the better of one measurement before and one after the steps,
        // so a machine that slows down in between does not flatter the step.
        let sgemmBefore = sgemmRate(size: gemmSize)
        let plan = try PipelinePlan(request: ScheduleRequest(kind: .naive, ranks: 1, twoBP: true), model: model, sampleLength: sampleLength)
        let worker = try StageWorker(plan: plan, model: model, seed: seed, transport: ThreadTransport.group(ranks: 1)[0])
        let batch = model.randomBatch(samples: batchSize, sampleLength: sampleLength, seed: seed)
        var phases: [String: Double] = [:]
        var total = 0.0
        let profile = GEMMProfile()
        for step in 0...steps {
            // Step 0 warms up; GEMMs are counted over the measured steps together.
            if step == 1 { profile.reset() }
            let start = DispatchTime.now().uptimeNanoseconds
            let result = try GEMMProfile.withCurrent(profile) { try worker.computeGradients(batch, clockOrigin: start) }
            let optimizerStart = DispatchTime.now().uptimeNanoseconds
            try worker.optimizer.update(learningRate: 1e-4, globalGradientNorm: worker.squaredGradientNorm().squareRoot())
            let end = DispatchTime.now().uptimeNanoseconds
            guard step > 0 else { continue }
            total += Double(end - start) / 1e9
            for event in result.events {
                let phase: String
                switch event.action.kind {
                case .forward: phase = "forward"
                case .backwardInput: phase = "backward_input"
                case .backwardWeight: phase = "backward_weight"
                case .backwardFull, .sendActivation, .receiveActivation, .sendGradient, .receiveGradient: phase = "other"
                }
                phases[phase, default: 0] += event.duration
            }
            phases["optimizer", default: 0] += Double(end - optimizerStart) / 1e9
        }
        let gemm = profile.totals
        let sgemm = max(sgemmBefore, sgemmRate(size: gemmSize))
        let (identical, difference) = try compareWithOneThread(worker: worker, batch: batch, threads: blasThreads)
        let stepSeconds = total / Double(steps)
        let stepFLOPs = model.trainingFLOPsPerSample(sampleLength: sampleLength) * Double(batchSize)
        let achieved = stepFLOPs / stepSeconds / 1e9
        return Result(
            model: name, batchSize: batchSize, sampleLength: sampleLength, blasCore: BLAS.coreName,
            blasThreads: blasThreads, referenceGEMMSize: gemmSize, sgemmGFLOPS: sgemm, steps: steps,
            stepSeconds: stepSeconds, stepGFLOPs: stepFLOPs / 1e9, achievedGFLOPS: achieved,
            fractionOfSGEMM: achieved / sgemm, phaseSeconds: phases.mapValues { $0 / Double(steps) },
            gemmSeconds: gemm.seconds / Double(steps), gemmGFLOPS: gemm.seconds > 0 ? gemm.flops / gemm.seconds / 1e9 : 0,
            nonGEMMSeconds: stepSeconds - gemm.seconds / Double(steps),
            bitIdenticalToOneThread: identical, largestRelativeDifferenceToOneThread: difference)
    }

    /// The loss and gradients of `batch` with `threads` threads against one thread, same weights.
    static func compareWithOneThread(worker: StageWorker, batch: any MicroBatch, threads: Int) throws -> (identical: Bool, largestRelativeDifference: Double) {
        func gradients(threads: Int) throws -> (loss: [Double], gradients: [[Float]]) {
            Parallel.setThreads(threads)
            let loss = try worker.computeGradients(batch, clockOrigin: DispatchTime.now().uptimeNanoseconds).loss
            return (loss, worker.parameters.map { $0.gradient.toArray() })
        }
        let one = try gradients(threads: 1)
        let many = try gradients(threads: threads)
        var largest = zip(one.loss, many.loss).map { abs($0 - $1) / max(abs($0), 1e-30) }.max() ?? 0
        for (a, b) in zip(one.gradients, many.gradients) {
            let scale = Double(a.map(abs).max() ?? 0)
            let difference = Double(zip(a, b).map { abs($0 - $1) }.max() ?? 0)
            if difference > 0 { largest = max(largest, difference / max(scale, 1e-30)) }
        }
        return (one.loss == many.loss && one.gradients == many.gradients, largest)
    }
}
