import Pipeline
import Schedules

/// The one all-reduce of a training step: each rank adds its loss, its share of
/// the squared gradient norm, and its own timing into a flat vector whose
/// per-rank slots are zero everywhere else, so a sum gathers them all.
struct StepReduction {
    /// The step's loss terms (`ModelConfig.lossTerms`) over the whole batch; the first is the loss.
    let lossTerms: [Double]
    var loss: Double { lossTerms[0] }
    let gradientNorm: Double
    /// Per rank: compute time, first start and last end of the step's actions (seconds from the step's start).
    let busy: [Double]
    let starts: [Double]
    let ends: [Double]
    /// Whether any rank was asked to stop (`StopSignal`), so that all stop after the same step.
    let stopRequested: Bool

    /// Contributes this rank's figures and returns everyone's.
    /// `loss` holds `termCount` terms on the ranks that computed a loss and is empty elsewhere.
    static func reduce(loss: [Double], termCount: Int, squaredGradientNorm: Double, events: [TimelineEvent],
                       over transport: Transport) throws -> StepReduction {
        let ranks = transport.worldSize
        let timing = termCount + 1
        var local = [Double](repeating: 0, count: timing + 3 * ranks + 1)
        for (index, term) in loss.enumerated() { local[index] = term }
        local[termCount] = squaredGradientNorm
        local[timing + transport.rank] = events.filter { !$0.action.kind.isCommunication }.reduce(0) { $0 + $1.duration }
        local[timing + ranks + transport.rank] = events.first?.start ?? 0
        local[timing + 2 * ranks + transport.rank] = events.last?.end ?? 0
        local[timing + 3 * ranks] = StopSignal.pending == nil ? 0 : 1
        let sum = try transport.allReduceSum(local)
        return StepReduction(lossTerms: Array(sum[0..<termCount]), gradientNorm: sum[termCount].squareRoot(),
                             busy: Array(sum[timing..<(timing + ranks)]), starts: Array(sum[(timing + ranks)..<(timing + 2 * ranks)]),
                             ends: Array(sum[(timing + 2 * ranks)..<(timing + 3 * ranks)]),
                             stopRequested: sum[timing + 3 * ranks] > 0)
    }

    /// Per rank, idle time over the schedule's span (first start to last end over all ranks).
    var idleRatios: [Double] {
        let span = (ends.max() ?? 0) - (starts.min() ?? 0)
        return busy.map { span > 0 ? Swift.max(0, span - $0) / span : 0 }
    }
}
