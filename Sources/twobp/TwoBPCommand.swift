import ArgumentParser
import Foundation
import Pipeline
import Schedules
import Tensor

/// The `twobp` command line: train, check and plan pipeline-parallel runs with 2-stage backpropagation.
@main
struct TwoBPCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "twobp",
        abstract: "Pipeline-parallel training with 2-stage backpropagation (2BP, arXiv 2405.18047).",
        discussion: """
            Backward-p1 (the input gradient the previous stage waits for) runs and is sent at once; \
            backward-p2 (weight gradients) runs later, in bubbles or concatenated at the end of the step.
            Start with `twobp train --model llama-tiny --steps 50`, or `twobp schedule --schedule 1f1b-1 --stages 4 --2bp`.
            """,
        subcommands: [TrainCommand.self, VerifyCommand.self, GenerateCommand.self, EvalCommand.self, BenchCommand.self, ScheduleCommand.self, PlanCommand.self, ProfileCommand.self])

    /// Prints a `TwoBPError` (or a schedule's error) as one line and exits non-zero; anything else is ArgumentParser's to report.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
            try RankLauncher.finishMPI()
        } catch let error as TwoBPError {
            fail(error.message)
        } catch let error as ScheduleError {
            fail(error.message)
        } catch {
            exit(withError: error)
        }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("twobp: error: \(message)\n".utf8))
        Foundation.exit(1)
    }
}
