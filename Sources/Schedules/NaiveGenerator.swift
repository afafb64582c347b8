/// Naive model parallelism: the whole batch is one micro-batch that runs
/// through the stages one after the other, forward then backward, so only one
/// rank works at a time. It is GPipe with M = 1; the request rejects M != 1.
///
/// With 2BP: F0, I0 (the gradient leaves at once), then `W*` at the end, as in
/// the 2BP paper's naive baseline.
enum NaiveGenerator: ScheduleGenerator {
    static func actions(rank: Int, shape: PipelineShape) -> [Action] {
        GPipeGenerator.actions(rank: rank, shape: shape)
    }
}
