import Pipeline
import Schedules

/// The one all-reduce of a training step: each rank adds its loss, its share of
/// the squared gradient norm, and its own timing into a flat vector whose
/// per-rank slots are zero everywhere else, so a sum gathers them all.
struct StepReduction {
    /// Σ lossWeight · cross-entropy over the whole batch: the step's mean loss.
    let loss: Double
    let gradientNorm: Double
    /// Per rank: compute time, first start and last end of the step's actions (seconds from the step's start).
    let busy: [Double]
    let starts: [Double]
    let ends: [Double]

    /// Contributes this rank's figures and returns everyone's.
    static func reduce(loss: Double, squaredGradientNorm: Double, events: [TimelineEvent], over transport: Transport) throws -> StepReduction {
        let ranks = transport.worldSize
        var local = [Double](repeating: 0, count: 2 + 3 * ranks)
        local[0] = loss
        local[1] = squaredGradientNorm
        local[2 + transport.rank] = events.filter { !$0.action.kind.isCommunication }.reduce(0) { $0 + $1.duration }
        local[2 + ranks + transport.rank] = events.first?.start ?? 0
        local[2 + 2 * ranks + transport.rank] = events.last?.end ?? 0
        let sum = try transport.allReduceSum(local)
        return StepReduction(loss: sum[0], gradientNorm: sum[1].squareRoot(), busy: Array(sum[2..<(2 + ranks)]),
                             starts: Array(sum[(2 + ranks)..<(2 + 2 * ranks)]), ends: Array(sum[(2 + 2 * ranks)...]))
    }

    /// Per rank, idle time over the schedule's span (first start to last end over all ranks).
    var idleRatios: [Double] {
        let span = (ends.max() ?? 0) - (starts.min() ?? 0)
        return busy.map { span > 0 ? Swift.max(0, span - $0) / span : 0 }
    }
}
