#include "CMPIShim.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

MPI_Comm twobp_mpi_comm_world(void) { return MPI_COMM_WORLD; }
MPI_Comm twobp_mpi_comm_null(void) { return MPI_COMM_NULL; }
MPI_Datatype twobp_mpi_float(void) { return MPI_FLOAT; }
MPI_Datatype twobp_mpi_double(void) { return MPI_DOUBLE; }
MPI_Datatype twobp_mpi_byte(void) { return MPI_BYTE; }
MPI_Datatype twobp_mpi_int64(void) { return MPI_INT64_T; }
MPI_Datatype twobp_mpi_int32(void) { return MPI_INT32_T; }
MPI_Op twobp_mpi_sum(void) { return MPI_SUM; }
MPI_Op twobp_mpi_max(void) { return MPI_MAX; }
MPI_Request twobp_mpi_request_null(void) { return MPI_REQUEST_NULL; }
MPI_Status *twobp_mpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
MPI_Errhandler twobp_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
int twobp_mpi_any_source(void) { return MPI_ANY_SOURCE; }
int twobp_mpi_any_tag(void) { return MPI_ANY_TAG; }
int twobp_mpi_success(void) { return MPI_SUCCESS; }
int twobp_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
int twobp_mpi_max_processor_name(void) { return MPI_MAX_PROCESSOR_NAME; }
int twobp_mpi_thread_single(void) { return MPI_THREAD_SINGLE; }
int twobp_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }
int twobp_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
int twobp_mpi_thread_multiple(void) { return MPI_THREAD_MULTIPLE; }

int twobp_mpi_tag_upper_bound(MPI_Comm comm) {
    int *value = NULL;
    int found = 0;
    if (MPI_Comm_get_attr(comm, MPI_TAG_UB, &value, &found) != MPI_SUCCESS || !found || value == NULL) return -1;
    return *value;
}

/* ---- termination report ------------------------------------------------ */

static char report_prefix[64];
static size_t report_prefix_length;
static char activity[512];
/* 1 while `activity` holds a complete string; 0 while it is empty or being rewritten. */
static volatile sig_atomic_t activity_ready;

static void write_all(const char *text, size_t length) {
    while (length > 0) {
        ssize_t written = write(STDERR_FILENO, text, length);
        if (written <= 0) return;
        text += written;
        length -= (size_t)written;
    }
}

static void termination_handler(int signal_number) {
    char number[12];
    size_t at = sizeof number;
    unsigned value = (unsigned)signal_number;
    do { number[--at] = (char)('0' + value % 10); value /= 10; } while (value > 0 && at > 0);
    write_all(report_prefix, report_prefix_length);
    write_all("terminated by signal ", 21);
    write_all(number + at, sizeof number - at);
    if (activity_ready) {
        write_all(" while ", 7);
        write_all(activity, strlen(activity));
    }
    write_all("\n", 1);
    /* Die of the same signal, so the exit status still says what happened. */
    signal(signal_number, SIG_DFL);
    raise(signal_number);
}

void twobp_mpi_install_termination_report(int rank) {
    int length = snprintf(report_prefix, sizeof report_prefix, "twobp rank %d: ", rank);
    report_prefix_length = length > 0 && (size_t)length < sizeof report_prefix ? (size_t)length : 0;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = termination_handler;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
}

void twobp_mpi_set_activity(const char *text) {
    activity_ready = 0;
    if (text == NULL) {
        activity[0] = '\0';
        return;
    }
    strncpy(activity, text, sizeof activity - 1);
    activity[sizeof activity - 1] = '\0';
    activity_ready = 1;
}
