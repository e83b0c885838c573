/* trio_uring._speedups: the per-operation hot path of native ops, in C.
 *
 * Why this exists beside the cffi ring core (ring.c, which holds no Python
 * objects): at one task, a 4 KiB page-cache read spends most of its time in
 * Python, not in the kernel -- about 17 Python-level calls per read, each
 * 0.1-0.3 us (building the op record, indexing it by fd, preparing the SQE
 * through cffi, a generator frame and trio's WaitTaskRescheduled message to
 * park, the completion loop, the callback, un-indexing, rescheduling,
 * allocating and copying the bytes).  This module does that work in a few C
 * calls, and nothing else: every decision that is not the common case stays
 * in Python (UringIOManager._native_done and friends), so the lifecycle of
 * GUIDE section 3 is still written once.
 *
 * What it provides:
 *
 * OpCore   the base class of the manager's _NativeOp: the fields every op
 *          needs as C members (the rare ones stay in the instance dict or
 *          as class defaults on trio_uring._ops.Op), and an awaitable:
 *          ``await op`` parks the current task exactly as trio's
 *          ``wait_task_rescheduled(op)`` does -- it yields trio's own
 *          WaitTaskRescheduled message with the op as abort function -- and
 *          returns what the task is woken with: a plain CQE result as it is
 *          (an int), trio's outcomes unwrapped.  An op made by
 *          Core.start_read returns its bytes instead of the count.
 *          If trio ever moves WaitTaskRescheduled (configure() gets None),
 *          ``await op`` drives trio's own wait_task_rescheduled instead.
 *
 * Core     one per UringIOManager, sharing its op table, its per-fd index
 *          and its ring:
 *          new_ud()          the next user_data (the manager's only counter)
 *          start_rw(...)     op + table + fd index + SQE for a buffer op
 *                            (READ, WRITE, RECV, SEND) on the caller's memory
 *          start_read(...)   the same for a READ or RECV into a new bytes
 *                            object, which ``await op`` returns
 *          dispatch(n, resched)
 *                            the n CQEs that tu_wait/tu_harvest left in the
 *                            ring's harvest buffer: the common completion of
 *                            a _NativeOp (it happened, its task waits, no
 *                            cancel asked) wakes the task here with the
 *                            result; every other CQE goes to its op's
 *                            Python callback, as before.
 *          An op under a finite deadline (or before the run's clock is
 *          known) takes the manager's Python path for its linked timeout.
 *
 * The bytes of start_read: a new bytes object is the read's buffer.  Nobody
 * but the op holds it until the final CQE (``keep``), so the kernel filling
 * it is the same as a C function filling a fresh bytes object before
 * returning it; a cancelled read's bytes are never handed out.  A full read
 * returns that very object, a short one a copy of its start.
 *
 * The ring is reached through the cffi module's own functions (their
 * addresses are passed in), so there is one ring core.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

struct tu_ring;
typedef int (*prep_rw_fn)(struct tu_ring *, uint8_t, int32_t, void *,
                          uint32_t, uint64_t, uint32_t, uint64_t);

#define CQE_F_MORE (1U << 1)

/* keep a pending exception across clean-up calls (PyErr_Fetch before 3.12) */
#if PY_VERSION_HEX >= 0x030C0000
#define SAVE_ERROR(e) PyObject *e = PyErr_GetRaisedException()
#define RESTORE_ERROR(e) PyErr_SetRaisedException(e)
#else
#define SAVE_ERROR(e)                                                          \
    PyObject *e##_t, *e##_v, *e##_tb;                                          \
    PyErr_Fetch(&e##_t, &e##_v, &e##_tb)
#define RESTORE_ERROR(e) PyErr_Restore(e##_t, e##_v, e##_tb)
#endif
#define MAX_BATCH 1024 /* the ring's HARVEST_BATCH */

/* ------------------------------------------------------------ module state
 * Set once by configure(); single-phase module (no subinterpreters). */
static PyObject *wait_msg_type; /* trio's WaitTaskRescheduled, or NULL */
static PyObject *fallback_park; /* trio.lowlevel.wait_task_rescheduled */
static PyObject *value_type;    /* outcome.Value */
static PyObject *empty_tuple;
static PyObject *s_abort_func, *s_unwrap, *s_callback, *s_active,
    *s_task, *s_kernel_deadline, *s_prep_native, *s_args, *s_flush;

/* ------------------------------------------------------------------ OpCore */
typedef struct {
    PyObject_HEAD
    unsigned long long ud;
    int opcode;
    int fd;
    int watched;   /* the fd whose notify_closing cancels it, or -1 */
    int watched2;  /* a second one (splice/tee), or -1 */
    int position;  /* SQ position while queued, else -1 */
    int link_position;
    int state;        /* await: 0 not yet, 1 parked, 2 done */
    int bytes_result; /* keep is the read's bytes: return them */
    double started;
    PyObject *task;
    PyObject *manager;
    PyObject *keep;
    PyObject *raise_cancel;
    PyObject *inner; /* trio's wait_task_rescheduled, in fallback mode */
} OpCore;

static PyTypeObject OpCore_Type;

static PyObject *op_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    (void)args;
    (void)kw;
    OpCore *op = (OpCore *)type->tp_alloc(type, 0);
    if (op == NULL)
        return NULL;
    op->watched = op->watched2 = op->position = op->link_position = -1;
    return (PyObject *)op;
}

static int op_init(OpCore *op, PyObject *args, PyObject *kw) {
    static char *names[] = {"ud",   "opcode",  "fd",      "task",
                            "manager", "keep", "started", "watched", NULL};
    PyObject *task, *manager, *keep;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KiiOOOdi", names, &op->ud,
                                     &op->opcode, &op->fd, &task, &manager,
                                     &keep, &op->started, &op->watched))
        return -1;
    Py_INCREF(task);
    Py_XSETREF(op->task, task);
    Py_INCREF(manager);
    Py_XSETREF(op->manager, manager);
    Py_INCREF(keep);
    Py_XSETREF(op->keep, keep);
    return 0;
}

static int op_traverse(OpCore *op, visitproc visit, void *arg) {
    Py_VISIT(op->task);
    Py_VISIT(op->manager);
    Py_VISIT(op->keep);
    Py_VISIT(op->raise_cancel);
    Py_VISIT(op->inner);
    return 0;
}

static int op_clear(OpCore *op) {
    Py_CLEAR(op->task);
    Py_CLEAR(op->manager);
    Py_CLEAR(op->keep);
    Py_CLEAR(op->raise_cancel);
    Py_CLEAR(op->inner);
    return 0;
}

static void op_dealloc(OpCore *op) {
    PyObject_GC_UnTrack(op);
    op_clear(op);
    Py_TYPE(op)->tp_free((PyObject *)op);
}

/* The result an awaiting task gets from the value it was woken with. */
static PyObject *op_result(OpCore *op, PyObject *value) {
    PyObject *result;
    if (value == Py_None || PyLong_CheckExact(value) ||
        PyBytes_CheckExact(value)) {
        result = Py_NewRef(value);
    } else {
        result = PyObject_CallMethodNoArgs(value, s_unwrap);
        if (result == NULL)
            return NULL;
    }
    if (op->bytes_result && PyLong_CheckExact(result)) {
        Py_ssize_t got = PyLong_AsSsize_t(result);
        Py_DECREF(result);
        if (got == -1 && PyErr_Occurred())
            return NULL;
        PyObject *buf = op->keep;
        if (buf == NULL || !PyBytes_CheckExact(buf) || got < 0) {
            PyErr_SetString(PyExc_SystemError, "read result out of range");
            return NULL;
        }
        /* A RECV with MSG_TRUNC reports a datagram's full length, which may
         * be more than fitted: what was received is the whole buffer. */
        if (got >= PyBytes_GET_SIZE(buf))
            return Py_NewRef(buf);
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf), got);
    }
    return result;
}

/* One step of ``await op``: 0 = yielded *out, 1 = returned *out, -1 error. */
static int op_step(OpCore *op, PyObject *value, PyObject **out) {
    *out = NULL;
    if (op->state == 0) {
        if (value != Py_None) {
            PyErr_SetString(PyExc_TypeError,
                            "can't send non-None value to an op not yet "
                            "awaited");
            return -1;
        }
        PyObject *msg;
        if (wait_msg_type != NULL) {
            /* WaitTaskRescheduled(abort_func=op), without attrs' frozen
             * __init__: trio reads msg.abort_func and drops the message */
            PyTypeObject *tp = (PyTypeObject *)wait_msg_type;
            msg = tp->tp_new(tp, empty_tuple, NULL);
            if (msg == NULL)
                return -1;
            if (PyObject_GenericSetAttr(msg, s_abort_func, (PyObject *)op) <
                0) {
                Py_DECREF(msg);
                return -1;
            }
        } else {
            if (fallback_park == NULL) {
                PyErr_SetString(PyExc_RuntimeError,
                                "trio_uring._speedups.configure() was not "
                                "called");
                return -1;
            }
            PyObject *inner = PyObject_CallOneArg(fallback_park,
                                                  (PyObject *)op);
            if (inner == NULL)
                return -1;
            PyObject *it = Py_TYPE(inner)->tp_as_async->am_await(inner);
            Py_DECREF(inner);
            if (it == NULL)
                return -1;
            PySendResult r = PyIter_Send(it, Py_None, &msg);
            if (r != PYGEN_NEXT) {
                Py_DECREF(it);
                if (r == PYGEN_RETURN) {
                    Py_CLEAR(msg);
                    PyErr_SetString(PyExc_RuntimeError,
                                    "wait_task_rescheduled did not park");
                }
                return -1;
            }
            op->inner = it;
        }
        op->state = 1;
        *out = msg;
        return 0;
    }
    if (op->state == 1) {
        op->state = 2;
        PyObject *inner = op->inner;
        if (inner != NULL) {
            op->inner = NULL;
            PyObject *got;
            PySendResult r = PyIter_Send(inner, value, &got);
            Py_DECREF(inner);
            if (r == PYGEN_ERROR)
                return -1;
            if (r == PYGEN_NEXT) {
                Py_DECREF(got);
                PyErr_SetString(PyExc_RuntimeError,
                                "wait_task_rescheduled parked twice");
                return -1;
            }
            *out = op_result(op, got);
            Py_DECREF(got);
        } else {
            *out = op_result(op, value);
        }
        return *out == NULL ? -1 : 1;
    }
    PyErr_SetString(PyExc_RuntimeError, "this operation was already awaited");
    return -1;
}

static PySendResult op_am_send(OpCore *op, PyObject *value, PyObject **out) {
    switch (op_step(op, value, out)) {
    case 0:
        return PYGEN_NEXT;
    case 1:
        return PYGEN_RETURN;
    default:
        return PYGEN_ERROR;
    }
}

static PyObject *op_send_common(OpCore *op, PyObject *value) {
    PyObject *out;
    int r = op_step(op, value, &out);
    if (r == 0)
        return out;
    if (r == 1) {
        if (out == Py_None) {
            PyErr_SetNone(PyExc_StopIteration);
        } else {
            PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, out);
            if (stop != NULL) {
                PyErr_SetObject(PyExc_StopIteration, stop);
                Py_DECREF(stop);
            }
        }
        Py_DECREF(out);
    }
    return NULL;
}

static PyObject *op_iternext(OpCore *op) {
    return op_send_common(op, Py_None);
}

static PyObject *op_send(OpCore *op, PyObject *value) {
    return op_send_common(op, value);
}

static PyObject *op_await(OpCore *op) { return Py_NewRef((PyObject *)op); }

static PyMethodDef op_methods[] = {
    {"send", (PyCFunction)op_send, METH_O,
     "Resume ``await op`` with the value its task was woken with."},
    {NULL, NULL, 0, NULL},
};

#define OFF(f) offsetof(OpCore, f)
static PyMemberDef op_members[] = {
    {"ud", T_ULONGLONG, OFF(ud), 0, "its user_data (the op table's key)"},
    {"opcode", T_INT, OFF(opcode), 0, "IORING_OP_*"},
    {"fd", T_INT, OFF(fd), 0, "the SQE's fd"},
    {"watched", T_INT, OFF(watched), 0, "notify_closing(fd) cancels it"},
    {"watched2", T_INT, OFF(watched2), 0, "a second such fd, or -1"},
    {"position", T_INT, OFF(position), 0, "SQ position while queued"},
    {"link_position", T_INT, OFF(link_position), 0,
     "its LINK_TIMEOUT's SQ position while queued"},
    {"started", T_DOUBLE, OFF(started), 0, "time.monotonic() at submission"},
    {"task", T_OBJECT, OFF(task), 0, "the task to wake, or None"},
    {"manager", T_OBJECT, OFF(manager), 0, "its UringIOManager"},
    {"keep", T_OBJECT, OFF(keep), 0, "what the kernel may touch"},
    {"raise_cancel", T_OBJECT, OFF(raise_cancel), 0,
     "trio asked to cancel it"},
    {NULL, 0, 0, 0, NULL},
};
#undef OFF

static PyAsyncMethods op_async = {
    .am_await = (unaryfunc)op_await,
    .am_send = (sendfunc)op_am_send,
};

static PyTypeObject OpCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "trio_uring._speedups.OpCore",
    .tp_doc = "The C part of a native operation (see trio_uring._ops.Op).",
    .tp_basicsize = sizeof(OpCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = op_new,
    .tp_init = (initproc)op_init,
    .tp_dealloc = (destructor)op_dealloc,
    .tp_traverse = (traverseproc)op_traverse,
    .tp_clear = (inquiry)op_clear,
    .tp_as_async = &op_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)op_iternext,
    .tp_methods = op_methods,
    .tp_members = op_members,
};

/* -------------------------------------------------------------------- Core */
typedef struct {
    PyObject_HEAD
    struct tu_ring *ring;
    prep_rw_fn prep_rw;
    int64_t *cqe_buf;
    unsigned batch;
    unsigned long long next_ud;
    double now;
    PyObject *ops;     /* dict: ud -> op (the manager's _ops) */
    PyObject *fd_ops;  /* dict: fd -> set of ops (the manager's _fd_ops) */
    PyObject *op_type; /* the manager's _NativeOp class */
    PyObject *manager;
    PyObject *run_ctx; /* trio's GLOBAL_RUN_CONTEXT */
    PyObject *deadlines; /* trio's Deadlines once the clock is known */
} Core;

static int core_init(Core *c, PyObject *args, PyObject *kw) {
    static char *names[] = {"ring",    "prep_rw", "cqe_buf", "batch",
                            "ops",     "fd_ops",  "op_type", "manager",
                            "run_ctx", "next_ud", NULL};
    unsigned long long ring, prep, buf;
    PyObject *ops, *fd_ops, *op_type, *manager, *run_ctx;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "KKKIO!O!O!OOK", names, &ring, &prep, &buf, &c->batch,
            &PyDict_Type, &ops, &PyDict_Type, &fd_ops, &PyType_Type,
            &op_type, &manager, &run_ctx, &c->next_ud))
        return -1;
    if (!PyType_IsSubtype((PyTypeObject *)op_type, &OpCore_Type)) {
        PyErr_SetString(PyExc_TypeError, "op_type must subclass OpCore");
        return -1;
    }
    if (c->batch == 0 || c->batch > MAX_BATCH || !ring || !prep || !buf) {
        PyErr_SetString(PyExc_ValueError, "bad ring, function or batch");
        return -1;
    }
    c->ring = (struct tu_ring *)(uintptr_t)ring;
    c->prep_rw = (prep_rw_fn)(uintptr_t)prep;
    c->cqe_buf = (int64_t *)(uintptr_t)buf;
    Py_XSETREF(c->ops, Py_NewRef(ops));
    Py_XSETREF(c->fd_ops, Py_NewRef(fd_ops));
    Py_XSETREF(c->op_type, Py_NewRef(op_type));
    Py_XSETREF(c->manager, Py_NewRef(manager));
    Py_XSETREF(c->run_ctx, Py_NewRef(run_ctx));
    return 0;
}

static int core_traverse(Core *c, visitproc visit, void *arg) {
    Py_VISIT(c->ops);
    Py_VISIT(c->fd_ops);
    Py_VISIT(c->op_type);
    Py_VISIT(c->manager);
    Py_VISIT(c->run_ctx);
    Py_VISIT(c->deadlines);
    return 0;
}

static int core_clear(Core *c) {
    Py_CLEAR(c->ops);
    Py_CLEAR(c->fd_ops);
    Py_CLEAR(c->op_type);
    Py_CLEAR(c->manager);
    Py_CLEAR(c->run_ctx);
    Py_CLEAR(c->deadlines);
    return 0;
}

static void core_dealloc(Core *c) {
    PyObject_GC_UnTrack(c);
    core_clear(c);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int core_ready(Core *c) {
    if (c->ops == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the IO manager is closed");
        return 0;
    }
    return 1;
}

/* fd_ops[fd].add(op), making the set on first use (kept when it empties) */
static int track(Core *c, int fd, PyObject *op) {
    PyObject *key = PyLong_FromLong(fd);
    if (key == NULL)
        return -1;
    PyObject *set = PyDict_GetItemWithError(c->fd_ops, key);
    int rc = -1;
    if (set == NULL) {
        if (PyErr_Occurred())
            goto out;
        PyObject *fresh = PySet_New(NULL);
        if (fresh == NULL)
            goto out;
        rc = PyDict_SetItem(c->fd_ops, key, fresh);
        Py_DECREF(fresh);
        if (rc < 0)
            goto out;
        set = fresh; /* the dict holds it */
    }
    rc = PySet_Add(set, op);
out:
    Py_DECREF(key);
    return rc;
}

static int untrack(Core *c, int fd, PyObject *op) {
    if (fd < 0)
        return 0;
    PyObject *key = PyLong_FromLong(fd);
    if (key == NULL)
        return -1;
    PyObject *set = PyDict_GetItemWithError(c->fd_ops, key);
    Py_DECREF(key);
    if (set == NULL)
        return PyErr_Occurred() ? -1 : 0;
    return PySet_Discard(set, op) < 0 ? -1 : 0;
}

/* The trio deadline a linked timeout must enforce: inf unless trio has a
 * deadline somewhere (then the manager's _kernel_deadline, which also
 * learns the run's clock on first use).  -1 and an exception on error. */
static int kernel_deadline(Core *c, PyObject *task, double *deadline) {
    *deadline = INFINITY;
    if (c->deadlines != NULL && c->deadlines != Py_None) {
        PyObject *active = PyObject_GetAttr(c->deadlines, s_active);
        if (active == NULL)
            return -1;
        int any = PyObject_IsTrue(active);
        Py_DECREF(active);
        if (any <= 0)
            return any;
    }
    PyObject *d = PyObject_CallMethodOneArg(c->manager, s_kernel_deadline,
                                            task);
    if (d == NULL)
        return -1;
    *deadline = PyFloat_AsDouble(d);
    Py_DECREF(d);
    return (*deadline == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* Queue op (a fresh OpCore not yet in the table) as a buffer op; returns
 * a new reference to it, or NULL with nothing left in the table. */
static PyObject *start(Core *c, OpCore *op, PyObject *task, void *addr,
                       uint32_t len, uint64_t off, uint32_t op_flags) {
    double deadline;
    PyObject *key;
    int rc;
    if (kernel_deadline(c, task, &deadline) < 0)
        goto fail;
    op->ud = c->next_ud++;
    key = PyLong_FromUnsignedLongLong(op->ud);
    if (key == NULL)
        goto fail;
    rc = PyDict_SetItem(c->ops, key, (PyObject *)op);
    if (rc < 0) {
        Py_DECREF(key);
        goto fail;
    }
    if (op->watched >= 0 && track(c, op->watched, (PyObject *)op) < 0)
        goto unlist;
    if (deadline == INFINITY) {
        int pos = c->prep_rw(c->ring, (uint8_t)op->opcode, op->fd, addr, len,
                             off, op_flags, op->ud);
        while (pos < 0) { /* the SQ is full: hand it to the kernel */
            PyObject *ring = PyObject_GetAttrString(c->manager, "_ring");
            if (ring == NULL)
                goto untrack;
            PyObject *r = PyObject_CallMethodNoArgs(ring, s_flush);
            Py_DECREF(ring);
            if (r == NULL)
                goto untrack;
            Py_DECREF(r);
            pos = c->prep_rw(c->ring, (uint8_t)op->opcode, op->fd, addr, len,
                             off, op_flags, op->ud);
        }
        op->position = pos;
    } else {
        PyObject *a = Py_BuildValue("(KIKIiiii)",
                                    (unsigned long long)(uintptr_t)addr, len,
                                    (unsigned long long)off, op_flags, 0, 0,
                                    0, 0);
        if (a == NULL)
            goto untrack;
        rc = PyObject_SetAttr((PyObject *)op, s_args, a);
        Py_DECREF(a);
        if (rc < 0)
            goto untrack;
        PyObject *dl = PyFloat_FromDouble(deadline);
        if (dl == NULL)
            goto untrack;
        PyObject *r = PyObject_CallMethodObjArgs(c->manager, s_prep_native,
                                                 (PyObject *)op, dl, NULL);
        Py_DECREF(dl);
        if (r == NULL) {
            /* _prep_native has abandoned the op (UringIOManager._abandon):
             * a queued SQE is a NOP and the op stays listed until its CQE,
             * or, with none queued, it is out of the table and the index */
            Py_DECREF(key);
            Py_DECREF(op);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(key);
    return (PyObject *)op;
untrack:
    if (op->watched >= 0) {
        SAVE_ERROR(exc);
        if (untrack(c, op->watched, (PyObject *)op) < 0)
            PyErr_Clear();
        RESTORE_ERROR(exc);
    }
unlist : {
    SAVE_ERROR(exc);
    if (PyDict_DelItem(c->ops, key) < 0)
        PyErr_Clear();
    RESTORE_ERROR(exc);
    Py_DECREF(key);
}
fail:
    Py_DECREF(op);
    return NULL;
}

/* A fresh op of the manager's class for the current task; *task borrowed */
static OpCore *new_op(Core *c, int opcode, int fd, PyObject *keep,
                      PyObject **task) {
    PyObject *t = PyObject_GetAttr(c->run_ctx, s_task);
    if (t == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_SetString(PyExc_RuntimeError,
                            "must be called from async context");
        }
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)c->op_type;
    OpCore *op = (OpCore *)op_new(tp, NULL, NULL);
    if (op == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    op->opcode = opcode;
    op->fd = fd;
    op->watched = fd;
    op->task = t; /* steals */
    op->manager = Py_NewRef(c->manager);
    op->keep = Py_NewRef(keep);
    op->started = c->now;
    *task = t;
    return op;
}

static int int_arg(PyObject *o, long long lo, long long hi, const char *what,
                   long long *out) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < lo || v > hi) {
        PyErr_Format(PyExc_ValueError, "%s out of range", what);
        return -1;
    }
    *out = v;
    return 0;
}

PyDoc_STRVAR(start_rw_doc,
             "start_rw(opcode, fd, keep, addr, length, offset, op_flags)\n--\n\n"
             "Queue a buffer op (READ, WRITE, RECV, SEND) of ``length`` bytes at\n"
             "``addr``, memory that ``keep`` holds, for the current task; ``await``\n"
             "the op returned for the CQE's result.  The caller checks the\n"
             "arguments (here only their C ranges are).");

static PyObject *core_start_rw(Core *c, PyObject *const *args,
                               Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "start_rw takes 7 arguments");
        return NULL;
    }
    if (!core_ready(c))
        return NULL;
    long long opcode, fd, len, flags;
    if (int_arg(args[0], 0, 255, "opcode", &opcode) < 0 ||
        int_arg(args[1], INT32_MIN, INT32_MAX, "fd", &fd) < 0 ||
        int_arg(args[4], 0, UINT32_MAX, "length", &len) < 0 ||
        int_arg(args[6], 0, UINT32_MAX, "op_flags", &flags) < 0)
        return NULL;
    unsigned long long addr = PyLong_AsUnsignedLongLong(args[3]);
    if (addr == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    unsigned long long off = PyLong_AsUnsignedLongLong(args[5]);
    if (off == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *task;
    OpCore *op = new_op(c, (int)opcode, (int)fd, args[2], &task);
    if (op == NULL)
        return NULL;
    return start(c, op, task, (void *)(uintptr_t)addr, (uint32_t)len, off,
                 (uint32_t)flags);
}

PyDoc_STRVAR(start_read_doc,
             "start_read(opcode, fd, nbytes, offset, op_flags)\n--\n\n"
             "Queue a READ or RECV of up to ``nbytes`` into a new bytes object;\n"
             "``await`` the op returned for the bytes read.  The caller checks the\n"
             "arguments (here only their C ranges are).");

static PyObject *core_start_read(Core *c, PyObject *const *args,
                                 Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "start_read takes 5 arguments");
        return NULL;
    }
    if (!core_ready(c))
        return NULL;
    long long opcode, fd, n, flags;
    if (int_arg(args[0], 0, 255, "opcode", &opcode) < 0 ||
        int_arg(args[1], INT32_MIN, INT32_MAX, "fd", &fd) < 0 ||
        int_arg(args[2], 0, INT32_MAX, "nbytes", &n) < 0 ||
        int_arg(args[4], 0, UINT32_MAX, "op_flags", &flags) < 0)
        return NULL;
    unsigned long long off = PyLong_AsUnsignedLongLong(args[3]);
    if (off == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *buf = PyBytes_FromStringAndSize(NULL, n);
    if (buf == NULL)
        return NULL;
    PyObject *task;
    OpCore *op = new_op(c, (int)opcode, (int)fd, buf, &task);
    Py_DECREF(buf);
    if (op == NULL)
        return NULL;
    op->bytes_result = 1;
    return start(c, op, task, PyBytes_AS_STRING(buf), (uint32_t)n, off,
                 (uint32_t)flags);
}

PyDoc_STRVAR(close_doc,
             "close()\n--\n\n"
             "Forget the ring (its memory is about to go) and the manager: every\n"
             "later call raises RuntimeError.");

static PyObject *core_close(Core *c, PyObject *unused) {
    (void)unused;
    c->ring = NULL;
    c->prep_rw = NULL;
    c->cqe_buf = NULL;
    core_clear(c);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(new_ud_doc, "new_ud()\n--\n\nThe next unused user_data.");

static PyObject *core_new_ud(Core *c, PyObject *unused) {
    (void)unused;
    return PyLong_FromUnsignedLongLong(c->next_ud++);
}

/* The common completion of a _NativeOp: 1 handled, 0 not the common case,
 * -1 error.  Mirrors the first block of UringIOManager._native_done. */
static int complete_fast(Core *c, OpCore *op, int32_t res,
                         PyObject *reschedule) {
    PyObject *task = op->task;
    if (res < 0 || task == NULL || task == Py_None ||
        (op->raise_cancel != NULL && op->raise_cancel != Py_None))
        return 0;
    op->position = -1;
    op->link_position = -1;
    op->task = NULL; /* we own the reference now */
    if (untrack(c, op->watched, (PyObject *)op) < 0 ||
        untrack(c, op->watched2, (PyObject *)op) < 0) {
        Py_DECREF(task);
        return -1;
    }
    PyObject *value = PyLong_FromLong(res);
    if (value != NULL && wait_msg_type == NULL) {
        Py_SETREF(value, PyObject_CallOneArg(value_type, value));
    }
    if (value == NULL) {
        Py_DECREF(task);
        return -1;
    }
    PyObject *argv[2] = {task, value};
    PyObject *r = PyObject_Vectorcall(reschedule, argv, 2, NULL);
    Py_DECREF(task);
    Py_DECREF(value);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 1;
}

PyDoc_STRVAR(dispatch_doc,
             "dispatch(n, reschedule)\n--\n\n"
             "Hand the ``n`` CQEs waiting in the harvest buffer to their ops: the\n"
             "common completion of a native op wakes its task here through\n"
             "``reschedule(task, result)``; any other CQE calls its op's\n"
             "``callback(op, res, flags)``.  Raises what a callback raises.");

static PyObject *core_dispatch(Core *c, PyObject *const *args,
                               Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "dispatch takes 2 arguments");
        return NULL;
    }
    if (!core_ready(c))
        return NULL;
    long long n;
    if (int_arg(args[0], 0, c->batch, "n", &n) < 0)
        return NULL;
    PyObject *reschedule = args[1];
    /* callbacks may reuse the harvest buffer: work on a copy */
    int64_t cqes[3 * MAX_BATCH];
    memcpy(cqes, c->cqe_buf, sizeof(int64_t) * 3 * (size_t)n);
    for (long long i = 0; i < n; i++) {
        if (c->ops == NULL) { /* a callback closed the manager */
            PyErr_SetString(PyExc_RuntimeError, "the IO manager is closed");
            return NULL;
        }
        uint64_t ud = (uint64_t)cqes[3 * i];
        int32_t res = (int32_t)cqes[3 * i + 1];
        uint32_t fl = (uint32_t)cqes[3 * i + 2];
        PyObject *key = PyLong_FromUnsignedLongLong(ud);
        if (key == NULL)
            return NULL;
        PyObject *op = PyDict_GetItemWithError(c->ops, key);
        if (op == NULL) {
            Py_DECREF(key);
            if (PyErr_Occurred())
                return NULL;
            continue;
        }
        Py_INCREF(op);
        if (!(fl & CQE_F_MORE) && PyDict_DelItem(c->ops, key) < 0) {
            Py_DECREF(key);
            Py_DECREF(op);
            return NULL;
        }
        Py_DECREF(key);
        if ((PyObject *)Py_TYPE(op) == c->op_type) {
            int done = complete_fast(c, (OpCore *)op, res, reschedule);
            if (done != 0) {
                Py_DECREF(op);
                if (done < 0)
                    return NULL;
                continue;
            }
        }
        PyObject *cb = PyObject_GetAttr(op, s_callback);
        PyObject *r = NULL;
        if (cb != NULL) {
            PyObject *res_o = PyLong_FromLong(res);
            PyObject *fl_o = PyLong_FromUnsignedLong(fl);
            if (res_o != NULL && fl_o != NULL) {
                PyObject *argv[3] = {op, res_o, fl_o};
                r = PyObject_Vectorcall(cb, argv, 3, NULL);
            }
            Py_XDECREF(res_o);
            Py_XDECREF(fl_o);
            Py_DECREF(cb);
        }
        Py_DECREF(op);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

static PyMethodDef core_methods[] = {
    {"start_rw", (PyCFunction)(void (*)(void))core_start_rw, METH_FASTCALL,
     start_rw_doc},
    {"start_read", (PyCFunction)(void (*)(void))core_start_read,
     METH_FASTCALL, start_read_doc},
    {"new_ud", (PyCFunction)core_new_ud, METH_NOARGS, new_ud_doc},
    {"close", (PyCFunction)core_close, METH_NOARGS, close_doc},
    {"dispatch", (PyCFunction)(void (*)(void))core_dispatch, METH_FASTCALL,
     dispatch_doc},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef core_members[] = {
    {"next_ud", T_ULONGLONG, offsetof(Core, next_ud), 0,
     "the next user_data new_ud() hands out"},
    {"now", T_DOUBLE, offsetof(Core, now), 0,
     "the start time given to new ops (the loop's last wake-up)"},
    {"deadlines", T_OBJECT, offsetof(Core, deadlines), 0,
     "trio's Deadlines (its _active count), once the run's clock is known"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject Core_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "trio_uring._speedups.Core",
    .tp_doc = "A UringIOManager's native-op hot path (see the module doc).",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)core_init,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
};

/* ------------------------------------------------------------------ module */
PyDoc_STRVAR(configure_doc,
             "configure(wait_message, fallback_park, value_type)\n--\n\n"
             "``wait_message``: trio's WaitTaskRescheduled class (ops park with it\n"
             "and are woken with plain results), or None (ops park through\n"
             "``fallback_park``, trio's wait_task_rescheduled, and are woken with\n"
             "``value_type(result)``).");

static PyObject *configure(PyObject *module, PyObject *const *args,
                           Py_ssize_t nargs) {
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "configure takes 3 arguments");
        return NULL;
    }
    if (args[0] != Py_None && !PyType_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "wait_message must be a class");
        return NULL;
    }
    Py_XSETREF(wait_msg_type, args[0] == Py_None ? NULL : Py_NewRef(args[0]));
    Py_XSETREF(fallback_park, Py_NewRef(args[1]));
    Py_XSETREF(value_type, Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     configure_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "trio_uring._speedups",
    .m_doc = "The per-operation hot path of trio_uring's native ops, in C.",
    .m_size = -1,
    .m_methods = module_methods,
};

#define INTERN(var, text)                                                      \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                      \
        return NULL;

PyMODINIT_FUNC PyInit__speedups(void) {
    INTERN(s_abort_func, "abort_func");
    INTERN(s_unwrap, "unwrap");
    INTERN(s_callback, "callback");
    INTERN(s_active, "_active");
    INTERN(s_task, "task");
    INTERN(s_kernel_deadline, "_kernel_deadline");
    INTERN(s_prep_native, "_prep_native");
    INTERN(s_args, "args");
    INTERN(s_flush, "flush");
    if ((empty_tuple = PyTuple_New(0)) == NULL)
        return NULL;
    if (PyType_Ready(&OpCore_Type) < 0 || PyType_Ready(&Core_Type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "OpCore", (PyObject *)&OpCore_Type) < 0 ||
        PyModule_AddObjectRef(m, "Core", (PyObject *)&Core_Type) < 0 ||
        PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
