/// GPipe (Huang et al., 2019): every rank runs the forwards of all M
/// micro-batches, then their backwards, oldest first (the order of PyTorch's
/// `ScheduleGPipe`). Peak memory holds all M micro-batches' activations.
///
/// With 2BP: all I in the same order, then all p2 at the end of the step as
/// one `W*`. No W can fill an earlier gap: the only idle time after the first
/// I is at the end of the step, which is where `W*` goes.
enum GPipeGenerator: ScheduleGenerator {
    static func actions(rank: Int, shape: PipelineShape) -> [Action] {
        let chunk = 0
        let forwards = (0..<shape.microBatches).map { PlannedSlot.forward(microBatch: $0, chunk: chunk) }
        let backwards = (0..<shape.microBatches).map {
            PlannedSlot.backward(microBatch: $0, chunk: chunk, inCooldown: false)
        }
        return BackwardStyle.render(forwards + backwards, twoBP: shape.twoBP)
    }
}
