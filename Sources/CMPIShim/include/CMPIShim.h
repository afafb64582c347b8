#ifndef TWOBP_CMPI_SHIM_H
#define TWOBP_CMPI_SHIM_H
/* Open MPI defines its handles and sentinels as macros over global structs, which Swift cannot import. */
#include <mpi.h>

MPI_Comm twobp_mpi_comm_world(void);
MPI_Comm twobp_mpi_comm_null(void);
MPI_Datatype twobp_mpi_float(void);
MPI_Datatype twobp_mpi_double(void);
MPI_Datatype twobp_mpi_byte(void);
MPI_Datatype twobp_mpi_int64(void);
MPI_Datatype twobp_mpi_int32(void);
MPI_Op twobp_mpi_sum(void);
MPI_Op twobp_mpi_max(void);
MPI_Request twobp_mpi_request_null(void);
MPI_Status *twobp_mpi_status_ignore(void);
MPI_Errhandler twobp_mpi_errors_return(void);
int twobp_mpi_any_source(void);
int twobp_mpi_any_tag(void);
int twobp_mpi_success(void);
int twobp_mpi_max_error_string(void);
int twobp_mpi_max_processor_name(void);
int twobp_mpi_thread_single(void);
int twobp_mpi_thread_funneled(void);
int twobp_mpi_thread_serialized(void);
int twobp_mpi_thread_multiple(void);

/* The largest tag the communicator accepts (MPI_TAG_UB attribute), or -1 if it cannot be read. */
int twobp_mpi_tag_upper_bound(MPI_Comm comm);

/*
 * Termination report. When mpirun brings a job down because another rank died,
 * it SIGTERMs the survivors, which would otherwise vanish without a word.
 * After `twobp_mpi_install_termination_report(rank)`, a SIGTERM prints
 * "twobp rank R: terminated by signal 15" to stderr, followed by " while
 * <activity>" when one is set (async-signal-safe: write(2) only), and the
 * process then dies of the signal as before. Activities are copied into a static buffer; passing NULL
 * clears it.
 */
void twobp_mpi_install_termination_report(int rank);
void twobp_mpi_set_activity(const char *activity);
#endif
