// swift-tools-version:6.0
import PackageDescription

/// Hot loops are written against unsafe buffers; the targets that own them (Tensor, Layers)
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
        /// OpenBLAS 0.3.34 from PyPI's scipy-openblas32 wheel; scripts/install-deps.sh installs it and its pkg-config file.
        .systemLibrary(name: "CBLAS", pkgConfig: "scipy-openblas"),
        .systemLibrary(name: "CMPI", pkgConfig: "mpi", providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CMPIShim", dependencies: ["CMPI"]),
        .target(name: "Tensor", dependencies: ["CBLAS"], swiftSettings: kernelSettings),
        .target(name: "Files", dependencies: ["Tensor"]),
        .target(name: "Layers", dependencies: ["Tensor"], swiftSettings: kernelSettings),
        .target(name: "Models", dependencies: ["Layers", "Files"]),
        .target(name: "Schedules"),
        .target(name: "Pipeline", dependencies: ["Models", "Schedules", "CMPIShim"]),
        .target(name: "Data", dependencies: ["Models", "Files"]),
        .target(name: "Checkpoints", dependencies: ["Pipeline", "Files"]),
        .target(name: "Training", dependencies: ["Checkpoints", "Data"]),
        .target(name: "Benchmarks", dependencies: ["Training", "CMPIShim"]),
        .executableTarget(name: "twobp", dependencies: [
            "Benchmarks",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        /// Test driver for MPITransport, run under mpirun by Tests/PipelineTests/MPI*Tests.swift.
        .executableTarget(name: "twobp-mpi-check", dependencies: ["Benchmarks"]),
        .testTarget(name: "TensorTests", dependencies: ["Tensor"]),
        .testTarget(name: "LayersTests", dependencies: ["Layers"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models"]),
        .testTarget(name: "SchedulesTests", dependencies: ["Schedules"]),
        .testTarget(name: "PipelineTests", dependencies: ["Benchmarks"]),
        .testTarget(name: "TrainingTests", dependencies: ["Benchmarks"]),
    ],
    swiftLanguageModes: [.v5]
)
