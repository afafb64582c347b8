// swift-tools-version:6.0
import PackageDescription

/// Hot loops are written against unsafe buffers; the targets that own them
/// compile with `-Ounchecked` in release so bounds checks stay out of kernels.
let kernelSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "TwoBP",
    products: [
        .executable(name: "twobp", targets: ["twobp"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "mpi", providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CMPIShim", dependencies: ["CMPI"]),
        .target(name: "Tensor", dependencies: ["CBLAS"], swiftSettings: kernelSettings),
        .target(name: "Layers", dependencies: ["Tensor"], swiftSettings: kernelSettings),
        .target(name: "Models", dependencies: ["Layers"], swiftSettings: kernelSettings),
        .target(name: "Schedules"),
        .target(name: "Pipeline", dependencies: ["Models", "Schedules", "CMPIShim"]),
        .target(name: "Training", dependencies: ["Pipeline"]),
        .executableTarget(name: "twobp", dependencies: [
            "Training",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        /// Test driver for MPITransport, run under mpirun by Tests/PipelineTests/MPI*Tests.swift.
        .executableTarget(name: "twobp-mpi-check", dependencies: ["Pipeline", "Tensor"]),
        .testTarget(name: "TensorTests", dependencies: ["Tensor"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models"]),
        .testTarget(name: "SchedulesTests", dependencies: ["Schedules"]),
        .testTarget(name: "PipelineTests", dependencies: ["Pipeline", "Training"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training"]),
    ],
    swiftLanguageModes: [.v5]
)
